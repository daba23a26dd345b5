"""TD learning against trusted oracles: hand-worked updates, the random walk's known values
(Sutton & Barto Example 6.2) and the book's qualitative results (Fig. 6.2, Example 6.6)."""

import numpy as np
import pytest

from llmcourse import bellman, td
from llmcourse import cliff_walking as cw
from llmcourse import random_walk as rw

# --------------------------------------------------------------------------- ε-greedy


def test_epsilon_greedy_probs_by_hand():
    # one best action of 3, ε = 0.3: 1 − ε + ε/3 = 0.8 and ε/3 = 0.1
    np.testing.assert_allclose(td.epsilon_greedy_probs(np.array([0.0, 2.0, 1.0]), 0.3), [0.1, 0.8, 0.1])
    # a tie between two of four actions, ε = 0.2: (1 − ε)/2 + ε/4 = 0.45
    np.testing.assert_allclose(td.epsilon_greedy_probs(np.array([1.0, 3.0, 3.0, 0.0]), 0.2), [0.05, 0.45, 0.45, 0.05])


@pytest.mark.parametrize("q,epsilon", [([1.0, 3.0, 3.0, 0.0], 0.2), ([0.0, 0.0, 0.0], 0.0), ([2.0, -1.0], 0.5)])
def test_epsilon_greedy_samples_its_probabilities(q, epsilon):
    q = np.array(q)
    rng = np.random.default_rng(0)
    n = 20_000
    counts = np.bincount([td.epsilon_greedy(q, epsilon, rng) for _ in range(n)], minlength=len(q))
    np.testing.assert_allclose(counts / n, td.epsilon_greedy_probs(q, epsilon), atol=0.015)


def test_epsilon_greedy_returns_a_python_int():
    assert type(td.epsilon_greedy(np.array([0.0, 1.0]), 0.1, np.random.default_rng(0))) is int


# --------------------------------------------------------------------------- prediction updates


def test_td0_update_by_hand():
    V = np.array([0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 0.0])
    # D -> E, reward 0: V(D) = 0.6 + 0.1 · (0 + 1 · 0.8 − 0.6) = 0.62
    V_new = td.td0_update(V, state=4, reward=0.0, next_state=5, terminated=False, alpha=0.1, gamma=1.0)
    expected = V.copy()
    expected[4] = 0.62
    np.testing.assert_allclose(V_new, expected)
    assert V[4] == 0.6, "the input must not change"


def test_td0_update_into_terminal_uses_the_reward_only():
    V = np.array([0.0, 0.5, 9.0])  # a stale value in the terminal state must not count
    V_new = td.td0_update(V, state=1, reward=1.0, next_state=2, terminated=True, alpha=0.1, gamma=1.0)
    assert V_new[1] == pytest.approx(0.5 + 0.1 * (1.0 - 0.5))


def test_returns_by_hand():
    np.testing.assert_allclose(td.returns([1.0, 0.0, 2.0], 0.5), [1.0 + 0.5 * 0.0 + 0.25 * 2.0, 1.0, 2.0])


def test_mc_update_by_hand_every_visit_backwards():
    # t = 2: G = 2, V(0) = 1; t = 1: G = 2, V(1) = 1; t = 0: G = 3, V(0) = 1 + 0.5 · (3 − 1) = 2
    np.testing.assert_allclose(td.mc_update(np.zeros(3), [0, 1, 0], [1.0, 0.0, 2.0], alpha=0.5, gamma=1.0),
                               [2.0, 1.0, 0.0])


def test_mc_with_step_size_one_on_single_visits_sets_the_returns():
    V = td.mc_update(np.full(4, 7.0), [0, 1, 2], [1.0, 1.0, 1.0], alpha=1.0, gamma=0.5)
    np.testing.assert_allclose(V, [1.75, 1.5, 1.0, 7.0])


# --------------------------------------------------------------------------- control updates


def test_q_learning_update_into_terminal_ignores_the_next_state():
    Q = np.array([[0.0, 0.0], [5.0, 7.0]])
    Q_new = td.q_learning_update(Q, state=0, action=1, reward=-1.0, next_state=1, terminated=True, alpha=0.5)
    np.testing.assert_allclose(Q_new, [[0.0, -0.5], [5.0, 7.0]])
    # the same step, not terminal: target −1 + 7 = 6, Q(0, 1) = 0.5 · 6 = 3
    Q_new = td.q_learning_update(Q, state=0, action=1, reward=-1.0, next_state=1, terminated=False, alpha=0.5)
    np.testing.assert_allclose(Q_new, [[0.0, 3.0], [5.0, 7.0]])


def test_sarsa_uses_the_next_action_and_equals_q_learning_when_it_is_greedy():
    Q = np.array([[0.0, 0.0], [5.0, 7.0]])
    sarsa = td.sarsa_update(Q, state=0, action=0, reward=0.0, next_state=1, next_action=0, terminated=False,
                            alpha=1.0, gamma=0.9)
    assert sarsa[0, 0] == pytest.approx(0.9 * 5.0)
    greedy = td.sarsa_update(Q, 0, 0, 0.0, 1, 1, False, 1.0, 0.9)
    np.testing.assert_allclose(greedy, td.q_learning_update(Q, 0, 0, 0.0, 1, False, 1.0, 0.9))


def test_sarsa_update_into_terminal_ignores_the_next_state():
    Q = np.array([[0.0, 0.0], [5.0, 7.0]])
    Q_new = td.sarsa_update(Q, 0, 1, -1.0, 1, 0, True, 0.5)
    assert Q_new[0, 1] == pytest.approx(-0.5)


# --------------------------------------------------------------------------- random walk (Example 6.2)


def test_random_walk_true_values_solve_the_bellman_equation():
    P = rw.transition_table()
    V = bellman.policy_evaluation(P, np.ones((rw.N_STATES, 1)), gamma=1.0, theta=1e-12)
    np.testing.assert_allclose(V[1:-1], [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6], atol=1e-9)
    np.testing.assert_allclose(rw.TRUE_VALUES, V[1:-1], atol=1e-9)


def test_random_walk_episodes_start_in_c_and_end_in_a_terminal_state():
    states, rewards = rw.episode(np.random.default_rng(0))
    assert states[0] == rw.START and states[-1] in (0, rw.N_STATES - 1)
    assert len(rewards) == len(states) - 1
    assert rewards[-1] == float(states[-1] == rw.N_STATES - 1) and sum(rewards[:-1]) == 0
    assert all(abs(a - b) == 1 for a, b in zip(states, states[1:]))


def test_prediction_histories_have_one_row_per_episode():
    eps = rw.episodes(np.random.default_rng(0), 5)
    for predict in (td.td0_prediction, td.mc_prediction):
        H = predict(eps, rw.initial_values(), 0.1)
        assert H.shape == (6, rw.N_STATES)
        np.testing.assert_allclose(H[0], rw.initial_values())
        assert H[:, 0].max() == H[:, -1].max() == 0.0  # terminal values stay 0
    assert rw.rms_error(rw.initial_values()[None])[0] == pytest.approx(np.sqrt(np.mean((0.5 - rw.TRUE_VALUES) ** 2)))


@pytest.fixture(scope="module")
def random_walk_curves():
    rng = np.random.default_rng(0)
    runs = [rw.episodes(rng, 100) for _ in range(100)]
    return rw.rms_curves(runs, "td", rw.TD_ALPHAS), rw.rms_curves(runs, "mc", rw.MC_ALPHAS)


def test_td_beats_mc_on_the_random_walk(random_walk_curves):
    """Fig. 6.2 (right): after 100 episodes, TD(0) with α = 0.1 or 0.05 has a lower RMS error
    than constant-α MC with any of the book's step sizes."""
    td_curves, mc_curves = random_walk_curves
    final = lambda y: y[-10:].mean()  # noqa: E731 - the last 10 episodes
    best_mc = min(final(y) for y in mc_curves.values())
    for alpha in (0.1, 0.05):
        assert final(td_curves[alpha]) < best_mc
    assert min(final(y) for y in td_curves.values()) < 0.75 * best_mc
    for y in (*td_curves.values(), *mc_curves.values()):  # every method learns something
        assert y[-1] < y[0]


# --------------------------------------------------------------------------- cliff walking (Example 6.6)


def test_cliff_walking_env_is_the_books():
    env = cw.make_env()
    state, _ = env.reset(seed=0)
    assert state == cw.START
    state, reward, terminated, _, _ = env.step(1)  # right from the start: into the cliff
    assert (state, reward, terminated) == (cw.START, -100, False)
    env.step(0)  # up
    for _ in range(11):
        state, reward, terminated, _, _ = env.step(1)
    state, reward, terminated, _, _ = env.step(2)  # down into the goal
    assert (state, reward, terminated) == (cw.GOAL, -1, True)


@pytest.fixture(scope="module")
def cliff_results():
    return cw.compare(td.ControlConfig(n_episodes=500, alpha=0.5, epsilon=0.1), n_runs=3, seed=0, progress=False)


def test_sarsa_earns_more_online_than_q_learning(cliff_results):
    last = {name: res["sums"][:, -100:].mean() for name, res in cliff_results.items()}
    assert last["SARSA"] > last["Q-learning"] + 10
    assert -35 < last["SARSA"] < -15  # the book's figure: about −25 for SARSA …
    assert -70 < last["Q-learning"] < -35  # … and about −50 for Q-learning


def test_q_learning_walks_the_edge_and_sarsa_keeps_away(cliff_results):
    env = cw.make_env()
    q_path = cw.greedy_path(env, cliff_results["Q-learning"]["Q"])
    assert q_path == [36, 24, *range(25, 36), 47]  # up, 11 × right along the edge, down: the optimal path
    sarsa_path = cw.greedy_path(env, cliff_results["SARSA"]["Q"])
    assert sarsa_path[-1] == cw.GOAL
    assert cw.distance_from_cliff(sarsa_path) >= 2 > cw.distance_from_cliff(q_path)
    assert len(sarsa_path) > len(q_path)
