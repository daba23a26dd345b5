"""Dynamic programming against Sutton & Barto's published figures and hand-worked cases."""

import gymnasium as gym
import numpy as np
import pytest

from llmcourse.bellman import (bellman_expectation_backup, discounted_return, evaluation_sweeps, greedy_policy,
                               policy_evaluation, policy_evaluation_in_place, policy_iteration, q_from_v,
                               value_iteration)
from llmcourse.gridworld import (BOOK_FIG_3_2, BOOK_FIG_3_5, BOOK_FIG_3_5_POLICY, BOOK_FIG_4_1, policy_arrows,
                                 random_mdp, sutton_barto_4x4, sutton_barto_5x5, uniform_policy)
from llmcourse.frozen_lake import success_rate

ONE_DECIMAL = 0.05 + 1e-9  # the book prints values to one decimal


def test_discounted_return_by_hand():
    assert discounted_return([1, 0, 2], 0.5) == 1.5
    assert discounted_return([], 0.9) == 0.0
    assert discounted_return([0, 0, 1], 0.9) == pytest.approx(0.81)


def test_q_from_v_by_hand_stops_at_terminal():
    P = {0: {0: [(0.5, 1, 1.0, False), (0.5, 0, 2.0, True)]}, 1: {0: [(1.0, 1, 0.0, False)]}}
    q = q_from_v(P, np.array([10.0, 4.0]), gamma=0.5)
    assert q[0, 0] == pytest.approx(0.5 * (1 + 0.5 * 4) + 0.5 * 2)  # no bootstrap after terminated
    assert q[1, 0] == pytest.approx(0.5 * 4)


def test_fig_3_2_random_policy_on_5x5():
    V = policy_evaluation(sutton_barto_5x5(), uniform_policy(25, 4), 0.9)
    assert np.abs(V.reshape(5, 5) - BOOK_FIG_3_2).max() <= ONE_DECIMAL


def test_fig_3_5_optimal_values_and_policy():
    V, policy = value_iteration(sutton_barto_5x5(), 0.9)
    assert np.abs(V.reshape(5, 5) - BOOK_FIG_3_5).max() <= ONE_DECIMAL
    assert policy_arrows(policy, (5, 5)) == BOOK_FIG_3_5_POLICY


@pytest.mark.parametrize("k", [0, 1, 2, 3, 10])
def test_fig_4_1_sweeps(k):
    history = evaluation_sweeps(sutton_barto_4x4(), uniform_policy(16, 4), 1.0, 10)
    assert np.abs(history[k].reshape(4, 4) - BOOK_FIG_4_1[k]).max() <= ONE_DECIMAL


def test_fig_4_1_second_sweep_by_hand():
    V2 = evaluation_sweeps(sutton_barto_4x4(), uniform_policy(16, 4), 1.0, 2)[2]
    assert V2[1] == pytest.approx(-1 - 0.75)  # one of four moves reaches the terminal corner
    assert V2[2] == pytest.approx(-2.0)


def test_fig_4_1_converged_values_are_exact_integers():
    V = policy_evaluation(sutton_barto_4x4(), uniform_policy(16, 4), 1.0)
    np.testing.assert_allclose(V.reshape(4, 4), BOOK_FIG_4_1["inf"], atol=1e-8)


def test_in_place_and_synchronous_evaluation_agree_and_in_place_needs_fewer_sweeps():
    P, pi = sutton_barto_4x4(), uniform_policy(16, 4)
    V_in_place, sweeps = policy_evaluation_in_place(P, pi, 1.0, 1e-10)
    np.testing.assert_allclose(V_in_place, policy_evaluation(P, pi, 1.0, 1e-12), atol=1e-8)
    history = evaluation_sweeps(P, pi, 1.0, sweeps)
    assert np.abs(history[-1] - history[-2]).max() > 1e-10  # synchronous is not done yet


def test_policy_iteration_and_value_iteration_agree_on_random_mdps():
    rng = np.random.default_rng(0)
    for _ in range(5):
        P = random_mdp(rng, 6, 3)
        V_pi, policy_pi, _ = policy_iteration(P, 0.9)
        V_vi, policy_vi = value_iteration(P, 0.9)
        np.testing.assert_allclose(V_pi, V_vi, atol=1e-7)
        np.testing.assert_array_equal(policy_pi, policy_vi)


def test_optimal_values_satisfy_the_bellman_optimality_equation():
    P = random_mdp(np.random.default_rng(1), 8, 4)
    V, _ = value_iteration(P, 0.95, theta=1e-12)
    np.testing.assert_allclose(q_from_v(P, V, 0.95).max(axis=1), V, atol=1e-9)


def test_policy_value_is_a_fixed_point_of_the_expectation_backup():
    rng = np.random.default_rng(2)
    P, policy = random_mdp(rng, 7, 3), rng.dirichlet(np.ones(3), size=7)
    V = policy_evaluation(P, policy, 0.9, theta=1e-12)
    np.testing.assert_allclose(bellman_expectation_backup(P, policy, V, 0.9), V, atol=1e-10)


def test_greedy_policy_splits_ties():
    np.testing.assert_array_equal(greedy_policy(np.array([[1.0, 3.0, 3.0 - 1e-12]])), [[0, 0.5, 0.5]])


@pytest.mark.parametrize("slippery,low", [(False, 0.99), (True, 0.65)])
def test_frozenlake_dp_policy_succeeds_in_the_real_environment(slippery, low):
    env = gym.make("FrozenLake-v1", is_slippery=slippery)
    _, policy = value_iteration(env.unwrapped.P, 0.99)
    greedy = success_rate(env, policy, 300, seed=1)
    random = success_rate(env, None, 300, seed=1)
    assert greedy >= low and random < 0.05


def test_frozenlake_rollouts_match_the_dp_prediction_without_a_step_limit():
    env = gym.make("FrozenLake-v1", is_slippery=True, max_episode_steps=10_000)
    _, policy = value_iteration(env.unwrapped.P, 0.99)
    predicted = policy_evaluation(env.unwrapped.P, policy, 1.0)[0]  # P(reach goal), any time
    measured = success_rate(env, policy, 1000, seed=2)
    assert abs(measured - predicted) < 4 * np.sqrt(predicted * (1 - predicted) / 1000)
