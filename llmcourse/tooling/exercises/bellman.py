"""Chapter 01 exercises: returns, Bellman backups, dynamic programming."""

from __future__ import annotations

import functools

import numpy as np

from llmcourse import bellman as ref
from llmcourse.tooling.checker import Exercise, KnownWrong, register, updates_in_place
from llmcourse.gridworld import random_mdp, random_policy, sutton_barto_4x4, sutton_barto_5x5, uniform_policy

# --------------------------------------------------------------------------- 1.1 discounted return


def _return_cases(rng: np.random.Generator) -> list[dict]:
    cases = [dict(rewards=[1.0, 0.0, 2.0], gamma=0.5), dict(rewards=[0.0, 0.0, 1.0], gamma=0.9),
             dict(rewards=[5.0], gamma=0.9), dict(rewards=[], gamma=0.9)]
    for _ in range(4):
        n = int(rng.integers(2, 10))
        cases.append(dict(rewards=[float(r) for r in rng.integers(-3, 4, n)], gamma=float(np.round(rng.uniform(0.3, 0.95), 2))))
    return cases


def _return_no_discount(rewards, gamma):
    return float(sum(rewards))


def _return_discount_from_one(rewards, gamma):
    return float(sum(gamma ** (k + 1) * r for k, r in enumerate(rewards)))


def _return_forwards(rewards, gamma):
    g = 0.0
    for r in rewards:  # G = r + γ G, but walking the episode forwards
        g = r + gamma * g
    return float(g)


def _return_last_only(rewards, gamma):
    return float(gamma ** (len(rewards) - 1) * rewards[-1]) if rewards else 0.0


# --------------------------------------------------------------------------- 1.2 q from v


def _mdp_cases(rng: np.random.Generator, with_policy: bool = False) -> list[dict]:
    cases = []
    grid = sutton_barto_4x4()
    V = -np.arange(16, dtype=float) % 5
    cases.append(dict(P=grid, V=V, gamma=0.9))
    for _ in range(3):
        n_s, n_a = int(rng.integers(3, 7)), int(rng.integers(2, 4))
        cases.append(dict(P=random_mdp(rng, n_s, n_a), V=np.round(rng.normal(0, 2, n_s), 2),
                          gamma=float(np.round(rng.uniform(0.5, 0.95), 2))))
    if with_policy:
        for case in cases:
            n_s, n_a = len(case["P"]), len(case["P"][0])
            case["policy"] = random_policy(rng, n_s, n_a)
    return cases


def _q_no_terminal(P, V, gamma):
    q = np.zeros((len(P), len(P[0])))
    for s in P:
        for a in P[s]:
            q[s, a] = sum(p * (r + gamma * V[s2]) for p, s2, r, done in P[s][a])
    return q


def _q_no_prob(P, V, gamma):
    q = np.zeros((len(P), len(P[0])))
    for s in P:
        for a in P[s]:
            q[s, a] = sum(r + gamma * V[s2] * (not done) for p, s2, r, done in P[s][a])
    return q


def _q_discount_reward(P, V, gamma):
    q = np.zeros((len(P), len(P[0])))
    for s in P:
        for a in P[s]:
            q[s, a] = sum(p * gamma * (r + V[s2] * (not done)) for p, s2, r, done in P[s][a])
    return q


def _q_no_gamma(P, V, gamma):
    return ref.q_from_v(P, V, 1.0)


# --------------------------------------------------------------------------- 1.3 expectation backup


def _backup_cases(rng):
    return _mdp_cases(rng, with_policy=True)


def _backup_max(P, policy, V, gamma):
    return ref.q_from_v(P, V, gamma).max(axis=1)


def _backup_mean(P, policy, V, gamma):
    return ref.q_from_v(P, V, gamma).mean(axis=1)


def _backup_in_place(P, policy, V, gamma):
    V = V.copy()
    for s in range(len(P)):
        V[s] = sum(policy[s, a] * sum(p * (r + gamma * V[s2] * (not d)) for p, s2, r, d in P[s][a]) for a in P[s])
    return V


def _backup_sweep_on_callers_v(P, policy, V, gamma):
    for s in range(len(P)):  # no copy: the caller's V is swept in place
        V[s] = sum(policy[s, a] * sum(p * (r + gamma * V[s2] * (not d)) for p, s2, r, d in P[s][a]) for a in P[s])
    return V


def _backup_no_terminal(P, policy, V, gamma):
    return (policy * _q_no_terminal(P, V, gamma)).sum(axis=1)


# --------------------------------------------------------------------------- 1.4 policy evaluation


def _evaluation_cases(rng):
    cases = [dict(P=sutton_barto_4x4(), policy=uniform_policy(16, 4), gamma=1.0, theta=1e-10),
             dict(P=sutton_barto_5x5(), policy=uniform_policy(25, 4), gamma=0.9, theta=1e-10)]
    for _ in range(2):
        n_s, n_a = int(rng.integers(3, 7)), int(rng.integers(2, 4))
        cases.append(dict(P=random_mdp(rng, n_s, n_a), policy=random_policy(rng, n_s, n_a),
                          gamma=float(np.round(rng.uniform(0.5, 0.95), 2)), theta=1e-10))
    return cases


def _evaluation_one_sweep(P, policy, gamma, theta=1e-10):
    return ref.bellman_expectation_backup(P, policy, np.zeros(len(P)), gamma)


def _evaluation_fixed_sweeps(P, policy, gamma, theta=1e-10):
    V = np.zeros(len(P))
    for _ in range(10):
        V = ref.bellman_expectation_backup(P, policy, V, gamma)
    return V


def _evaluation_min_delta(P, policy, gamma, theta=1e-10):
    V = np.zeros(len(P))
    for _ in range(10_000):
        V_new = ref.bellman_expectation_backup(P, policy, V, gamma)
        delta = np.abs(V_new - V).min()  # stops as soon as *one* state has settled
        V = V_new
        if delta < theta:
            break
    return V


def _evaluation_optimal(P, policy, gamma, theta=1e-10):
    return ref.value_iteration(P, gamma, theta)[0]


# --------------------------------------------------------------------------- 1.5 greedy policy


def _greedy_cases(rng):
    cases = [dict(q=np.array([[1.0, 3.0, 3.0], [0.0, -1.0, -2.0]]))]
    for _ in range(3):
        n_s, n_a = int(rng.integers(3, 8)), int(rng.integers(2, 5))
        q = rng.integers(-2, 3, (n_s, n_a)).astype(float)  # small integers: ties are common
        q += rng.choice([0.0, 1e-12, -1e-12], size=q.shape)  # float noise, as value iteration leaves it
        cases.append(dict(q=q))
    return cases


def _greedy_argmin(q):
    worst = q <= q.min(axis=1, keepdims=True) + 1e-9
    return worst / worst.sum(axis=1, keepdims=True)


def _greedy_first_argmax(q):
    return np.eye(q.shape[1])[q.argmax(axis=1)]


def _greedy_unnormalised(q):
    return (q >= q.max(axis=1, keepdims=True) - 1e-9).astype(float)


def _greedy_exact_ties(q):
    best = q == q.max(axis=1, keepdims=True)
    return best / best.sum(axis=1, keepdims=True)


def _greedy_indices(q):
    return q.argmax(axis=1)


# --------------------------------------------------------------------------- 1.6 value iteration


@functools.lru_cache(maxsize=1)
def _frozen_lake():
    import gymnasium as gym
    return gym.make("FrozenLake-v1").unwrapped.P


def _vi_cases(rng):
    cases = [dict(P=sutton_barto_5x5(), gamma=0.9, theta=1e-10), dict(P=sutton_barto_4x4(), gamma=1.0, theta=1e-10),
             # FrozenLake with γ = 1: two actions of one state have values that differ by a few ulps (a real tie)
             dict(P=_frozen_lake(), gamma=1.0, theta=1e-10)]
    for _ in range(2):
        n_s, n_a = int(rng.integers(3, 7)), int(rng.integers(2, 4))
        cases.append(dict(P=random_mdp(rng, n_s, n_a), gamma=float(np.round(rng.uniform(0.5, 0.95), 2)), theta=1e-10))
    return cases


def _vi_mean(P, gamma, theta=1e-10):
    n_s, n_a = len(P), len(P[0])
    V = ref.policy_evaluation(P, uniform_policy(n_s, n_a), gamma, theta)
    return V, ref.greedy_policy(ref.q_from_v(P, V, gamma))


def _vi_one_sweep(P, gamma, theta=1e-10):
    V = ref.q_from_v(P, np.zeros(len(P)), gamma).max(axis=1)
    return V, ref.greedy_policy(ref.q_from_v(P, V, gamma))


def _vi_no_terminal(P, gamma, theta=1e-10):
    V = np.zeros(len(P))
    for _ in range(10_000):
        V_new = _q_no_terminal(P, V, gamma).max(axis=1)
        done = np.abs(V_new - V).max() < theta
        V = V_new
        if done:
            break
    return V, ref.greedy_policy(_q_no_terminal(P, V, gamma))


def _vi_stale_policy(P, gamma, theta=1e-10):
    """The greedy policy of the first sweep's values instead of the final ones."""
    V, _ = ref.value_iteration(P, gamma, theta)
    return V, ref.greedy_policy(ref.q_from_v(P, np.zeros(len(P)), gamma))


def _vi_exact_ties(P, gamma, theta=1e-10):
    V, _ = ref.value_iteration(P, gamma, theta)
    q = ref.q_from_v(P, V, gamma)
    best = q == q.max(axis=1, keepdims=True)
    return V, best / best.sum(axis=1, keepdims=True)


def _vi_argmax_policy(P, gamma, theta=1e-10):
    V, _ = ref.value_iteration(P, gamma, theta)
    q = ref.q_from_v(P, V, gamma)
    return V, np.eye(q.shape[1])[q.argmax(axis=1)]


register(
    Exercise(
        id="1.1", title="Discounted return", reference=ref.discounted_return, cases=_return_cases,
        hint="G_0 = r_1 + γ r_2 + γ² r_3 + …: the k-th reward (counting from 0) is multiplied by γ^k.",
        known_wrong=[
            KnownWrong("no discount", _return_no_discount,
                       "You added the rewards without discounting: multiply the k-th reward by γ^k."),
            KnownWrong("discount from γ^1", _return_discount_from_one,
                       "The first reward is not discounted: it gets γ^0 = 1, the second γ^1, and so on."),
            KnownWrong("forwards recursion", _return_forwards,
                       "G = r + γ·G only works walking the episode backwards (from the last reward); "
                       "walking forwards discounts the early rewards most."),
            KnownWrong("last reward only", _return_last_only,
                       "Every reward counts, not only the last one: sum γ^k r_{k+1} over the whole episode."),
        ]),
    Exercise(
        id="1.2", title="Action values from state values", reference=ref.q_from_v, cases=_mdp_cases,
        hint="q(s,a) = Σ over the (prob, s', r, terminated) of P[s][a] of prob·(r + γ·v(s')·(not terminated)).",
        known_wrong=[
            KnownWrong("bootstraps past terminal", _q_no_terminal,
                       "A transition with terminated=True ends the episode: do not add γ·v(s') for it."),
            KnownWrong("ignores probabilities", _q_no_prob,
                       "Weight each outcome by its probability `prob`: q is an expectation over next states."),
            KnownWrong("discounts the reward", _q_discount_reward,
                       "Only the next state's value is discounted: r + γ·v(s'), not γ·(r + v(s'))."),
            KnownWrong("no discount", _q_no_gamma, "Multiply v(s') by γ: future value is discounted."),
        ]),
    Exercise(
        id="1.3", title="Bellman expectation backup", reference=ref.bellman_expectation_backup,
        cases=_backup_cases,
        hint="v'(s) = Σ_a π(a|s)·q(s,a), with q computed from the old V for every state.",
        known_wrong=[
            KnownWrong("max over actions", _backup_max,
                       "That is the Bellman *optimality* backup (max over actions). The expectation backup "
                       "averages q(s,·) with the policy's probabilities π(a|s)."),
            KnownWrong("ignores the policy", _backup_mean,
                       "You averaged the actions uniformly; weight them by π(a|s) = policy[s, a]."),
            KnownWrong("in-place update", _backup_in_place,
                       "You updated V in place, so later states saw new values. One synchronous backup uses "
                       "only the old V: build a new array."),
            KnownWrong("bootstraps past terminal", _backup_no_terminal,
                       "A transition with terminated=True ends the episode: do not add γ·v(s') for it."),
            KnownWrong("in-place sweep of the caller's V", _backup_sweep_on_callers_v,
                       "You wrote each new v(s) into the V you were given: later states saw new values (that is "
                       "an in-place sweep, not one synchronous backup), and the caller's V changed too. Build a "
                       "new array, `V_new = np.zeros_like(V)`, from the old V only, and return it."),
            KnownWrong("writes the result into V", updates_in_place(ref.bellman_expectation_backup, "V"),
                       "The new values are right, but you wrote them into the V you were given, so the caller's "
                       "V changed too (policy evaluation compares the old and new V to decide when to stop). "
                       "Return a new array and leave V as it was."),
        ]),
    Exercise(
        id="1.4", title="Iterative policy evaluation", reference=ref.policy_evaluation, cases=_evaluation_cases,
        hint="Start from V = 0 and repeat V ← backup(V) until max_s |V_new(s) − V(s)| < theta.",
        known_wrong=[
            KnownWrong("one sweep", _evaluation_one_sweep,
                       "One backup is not enough: repeat sweeps until the largest change is below theta."),
            KnownWrong("fixed number of sweeps", _evaluation_fixed_sweeps,
                       "A fixed number of sweeps may stop too early: loop until max |V_new − V| < theta."),
            KnownWrong("min instead of max", _evaluation_min_delta,
                       "Stop when the *largest* change over states is below theta (max, not min): "
                       "one settled state says nothing about the others."),
            KnownWrong("evaluates the optimal policy", _evaluation_optimal,
                       "You computed v* (max over actions). Policy evaluation averages actions with π(a|s)."),
        ]),
    Exercise(
        id="1.5", title="Greedy policy from q", reference=ref.greedy_policy, cases=_greedy_cases,
        hint="Mark the actions within tol of the row's max, then divide by how many there are.",
        known_wrong=[
            KnownWrong("argmin", _greedy_argmin, "Greedy means the action with the *largest* q, not the smallest."),
            KnownWrong("ties not split", _greedy_first_argmax,
                       "argmax keeps only the first best action. Split the probability equally between all "
                       "tied best actions (within tol)."),
            KnownWrong("not normalised", _greedy_unnormalised,
                       "Each row is a probability distribution: divide by the number of tied best actions."),
            KnownWrong("exact float ties", _greedy_exact_ties,
                       "Values that are equal on paper differ by ~1e-12 in floating point: count an action as "
                       "tied when q >= max − tol."),
            KnownWrong("returns indices", _greedy_indices,
                       "Return the policy as probabilities, shape (n_states, n_actions), not action indices."),
        ]),
    Exercise(
        id="1.6", title="Value iteration", reference=ref.value_iteration, cases=_vi_cases,
        hint="Repeat V ← max_a q(s,a) (q from V) until the largest change is below theta; "
             "then return (V, greedy_policy(q_from_v(P, V, gamma))).",
        known_wrong=[
            KnownWrong("expectation instead of max", _vi_mean,
                       "You averaged over actions (that evaluates the random policy). Value iteration takes "
                       "the max over actions."),
            KnownWrong("one sweep", _vi_one_sweep, "Repeat the max-backup until max |V_new − V| < theta."),
            KnownWrong("bootstraps past terminal", _vi_no_terminal,
                       "A transition with terminated=True ends the episode: do not add γ·v(s') for it."),
            KnownWrong("argmax policy", _vi_argmax_policy,
                       "The values are right, but argmax keeps only the first best action: return "
                       "greedy_policy(q_from_v(P, V, gamma)), which splits ties."),
            KnownWrong("exact ties only", _vi_exact_ties,
                       "Your policy splits only between actions whose values are exactly equal. Values that tie "
                       "in theory can differ by a few ulps after thousands of sweeps (FrozenLake with γ = 1 here): "
                       "use greedy_policy(q_from_v(P, V, gamma)), which counts actions within a tolerance as tied."),
            KnownWrong("stale policy", _vi_stale_policy,
                       "Compute the greedy policy from the final V (q_from_v(P, V, gamma)), not from an "
                       "earlier one."),
        ]),
)
