"""Chapter 02 exercises: Monte Carlo and TD(0) prediction, ε-greedy, SARSA, Q-learning."""

from __future__ import annotations

import numpy as np

from llmcourse import td as ref
from llmcourse.tooling.checker import Exercise, KnownWrong, register, updates_in_place

# --------------------------------------------------------------------------- 2.3 ε-greedy (defined first: its check is the unusual one)

N_DRAWS = 4000
"""ε-greedy is random: its check calls the function this many times per input (with the
input's seeded generator) and compares how often each action comes out with the exact
probabilities (`td.epsilon_greedy_probs`). A correct version is off by at most ~0.008
(one standard deviation at p = 1/2); the tolerance is 0.05 (over 6 standard deviations), and
every known mistake is at least 0.1 off on some fixed input."""


def _action_frequencies(fn, case: dict) -> np.ndarray:
    """How often ``fn`` picks each action over `N_DRAWS` calls: (n_actions,), sums to 1.

    For the reference itself, the exact probabilities (what the frequencies estimate).
    """
    q, epsilon, rng = case["q_values"], case["epsilon"], case["rng"]
    if fn is ref.epsilon_greedy:
        return ref.epsilon_greedy_probs(q, epsilon)
    n = len(q)
    counts = np.zeros(n)
    for _ in range(N_DRAWS):
        a = fn(q_values=q, epsilon=epsilon, rng=rng)
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) or not 0 <= a < n:
            raise ValueError(f"epsilon_greedy returned {a!r} ({type(a).__name__}); it must return one action "
                             f"index, an int between 0 and {n - 1}")
        counts[int(a)] += 1
    return counts / N_DRAWS


def _egreedy_cases(rng: np.random.Generator) -> list[dict]:
    seed = int(rng.integers(2**31))
    cases = [
        dict(q_values=np.array([1.0, 3.0, 3.0, 0.0]), epsilon=0.2),  # a tie between actions 1 and 2
        dict(q_values=np.array([0.5, -1.0, 2.0]), epsilon=0.6),  # one best action, the last
        dict(q_values=np.array([2.0, 0.0, 1.0, 0.0, -1.0]), epsilon=0.5),  # one best action, the first
        dict(q_values=np.zeros(3), epsilon=0.0),  # all tied, no exploration
    ]
    n = int(rng.integers(2, 7))
    cases.append(dict(q_values=rng.integers(-2, 3, n).astype(float), epsilon=float(rng.choice([0.1, 0.3, 0.5, 0.9]))))
    for k, case in enumerate(cases):
        case["rng"] = np.random.default_rng(seed + k)
    return cases


def _eg_first_tie(q_values, epsilon, rng):
    if rng.random() < epsilon:
        return int(rng.integers(len(q_values)))
    return int(np.argmax(q_values))


def _eg_explore_excludes_greedy(q_values, epsilon, rng):
    best = np.flatnonzero(q_values == q_values.max())
    greedy = int(best[rng.integers(len(best))])
    if rng.random() < epsilon:
        others = [a for a in range(len(q_values)) if a != greedy]
        return int(others[rng.integers(len(others))])
    return greedy


def _eg_wrong_way(q_values, epsilon, rng):
    if rng.random() < 1 - epsilon:  # explores with probability 1 − ε
        return int(rng.integers(len(q_values)))
    best = np.flatnonzero(q_values == q_values.max())
    return int(best[rng.integers(len(best))])


def _eg_never_explores(q_values, epsilon, rng):
    best = np.flatnonzero(q_values == q_values.max())
    return int(best[rng.integers(len(best))])


def _eg_off_by_one(q_values, epsilon, rng):
    if rng.random() < epsilon:
        return int(rng.integers(0, len(q_values) - 1))  # as if the upper bound were included
    best = np.flatnonzero(q_values == q_values.max())
    return int(best[rng.integers(len(best))])


# --------------------------------------------------------------------------- 2.1 every-visit MC


def _mc_cases(rng: np.random.Generator) -> list[dict]:
    cases = [
        dict(V=np.zeros(3), states=[0, 1, 0], rewards=[1.0, 0.0, 2.0], alpha=0.5, gamma=1.0),
        dict(V=np.array([0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0]), states=[3, 4, 3, 4, 5], rewards=[0, 0, 0, 0, 1.0],
             alpha=0.1, gamma=1.0),  # a random-walk episode that ends on the right
        dict(V=np.array([1.0, -1.0, 2.0, 0.0]), states=[2, 1, 2, 3, 1], rewards=[-1.0, 2.0, 0.0, 3.0, 1.0],
             alpha=0.3, gamma=0.8),
    ]
    for _ in range(2):
        n_states, T = int(rng.integers(3, 6)), int(rng.integers(4, 9))
        cases.append(dict(V=np.round(rng.normal(0, 1, n_states), 2), states=[int(s) for s in rng.integers(0, n_states, T)],
                          rewards=[float(r) for r in rng.integers(-2, 3, T)],
                          alpha=float(np.round(rng.uniform(0.1, 0.6), 2)), gamma=float(np.round(rng.uniform(0.5, 0.95), 2))))
    return cases


def _mc_first_visit(V, states, rewards, alpha, gamma=1.0):
    V = np.array(V, dtype=float)
    G = ref.returns(rewards, gamma)
    for t in reversed(range(len(states))):
        if states[t] not in states[:t]:
            V[states[t]] += alpha * (G[t] - V[states[t]])
    return V


def _mc_forwards(V, states, rewards, alpha, gamma=1.0):
    V = np.array(V, dtype=float)
    G = ref.returns(rewards, gamma)
    for t, s in enumerate(states):  # t = 0, 1, …: the *first* visit's return gets the last word
        V[s] += alpha * (G[t] - V[s])
    return V


def _mc_total_return(V, states, rewards, alpha, gamma=1.0):
    V = np.array(V, dtype=float)
    G0 = ref.returns(rewards, gamma)[0]
    for s in reversed(states):
        V[s] += alpha * (G0 - V[s])
    return V


def _mc_skips_first_reward(V, states, rewards, alpha, gamma=1.0):
    V = np.array(V, dtype=float)
    G = np.append(ref.returns(rewards, gamma)[1:], 0.0)  # G_t taken from R_{t+2} on
    for t in reversed(range(len(states))):
        V[states[t]] += alpha * (G[t] - V[states[t]])
    return V


def _mc_no_step_size(V, states, rewards, alpha, gamma=1.0):
    V = np.array(V, dtype=float)
    G = ref.returns(rewards, gamma)
    for t in reversed(range(len(states))):
        V[states[t]] = G[t]
    return V


def _mc_discounts_reward(V, states, rewards, alpha, gamma=1.0):
    V = np.array(V, dtype=float)
    g = 0.0
    for t in reversed(range(len(states))):
        g = gamma * (rewards[t] + g)
        V[states[t]] += alpha * (g - V[states[t]])
    return V


# --------------------------------------------------------------------------- 2.2 TD(0)


def _td_cases(rng: np.random.Generator) -> list[dict]:
    cases = [
        dict(V=np.array([0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0]), state=3, reward=0.0, next_state=4, terminated=False,
             alpha=0.1, gamma=1.0),
        dict(V=np.array([0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 0.0]), state=4, reward=0.0, next_state=5, terminated=False,
             alpha=0.1, gamma=1.0),  # hand-worked: 0.6 + 0.1·(0 + 0.8 − 0.6) = 0.62
        dict(V=np.array([1.0, 2.0, 3.0]), state=1, reward=1.0, next_state=2, terminated=True, alpha=0.5,
             gamma=0.9),  # a terminal next state that holds a stale value: it must not count
        dict(V=np.array([1.0, -2.0, 4.0, 0.5]), state=0, reward=-1.0, next_state=2, terminated=False, alpha=0.25,
             gamma=0.5),
    ]
    for _ in range(2):
        n = int(rng.integers(3, 8))
        s, s2 = (int(x) for x in rng.choice(n, 2, replace=False))
        cases.append(dict(V=np.round(rng.normal(0, 2, n), 2), state=s, reward=float(rng.integers(-2, 3)),
                          next_state=s2, terminated=bool(rng.random() < 0.3),
                          alpha=float(np.round(rng.uniform(0.1, 0.9), 2)), gamma=float(np.round(rng.uniform(0.5, 0.95), 2))))
    return cases


def _td_past_terminal(V, state, reward, next_state, terminated, alpha, gamma=1.0):
    return ref.td0_update(V, state, reward, next_state, False, alpha, gamma)


def _td_sign(V, state, reward, next_state, terminated, alpha, gamma=1.0):
    V = np.array(V, dtype=float)
    V[state] -= alpha * ref.td_error(V, state, reward, next_state, terminated, gamma)
    return V


def _td_no_gamma(V, state, reward, next_state, terminated, alpha, gamma=1.0):
    return ref.td0_update(V, state, reward, next_state, terminated, alpha, 1.0)


def _td_updates_next(V, state, reward, next_state, terminated, alpha, gamma=1.0):
    V = np.array(V, dtype=float)
    V[next_state] += alpha * ref.td_error(V, state, reward, next_state, terminated, gamma)
    return V


def _td_no_baseline(V, state, reward, next_state, terminated, alpha, gamma=1.0):
    V = np.array(V, dtype=float)
    V[state] += alpha * (reward + gamma * V[next_state] * (not terminated))  # forgot − V(S)
    return V


# --------------------------------------------------------------------------- 2.4 SARSA, 2.5 Q-learning


def _q_table(rng: np.random.Generator, n_states: int, n_actions: int) -> np.ndarray:
    """Distinct values, so max, mean, the chosen action and the terminal case all differ."""
    return np.round(rng.normal(0, 2, (n_states, n_actions)), 2)


def _control_cases(rng: np.random.Generator, sarsa: bool) -> list[dict]:
    Q0 = np.array([[0.0, 0.0, 0.0, 0.0], [-2.0, 5.0, 1.0, -1.0], [3.0, -4.0, 2.0, 0.5]])
    fixed = [  # (state, action, reward, next_state, next_action, terminated, alpha, gamma)
        (0, 1, -1.0, 1, 2, False, 0.5, 1.0),  # next_action is not the greedy one in state 1
        (0, 3, -1.0, 1, 0, True, 0.5, 1.0),  # into a terminal state: no bootstrapping
        (2, 0, 1.0, 1, 3, False, 0.1, 0.9),
    ]
    cases = []
    for s, a, r, s2, a2, done, alpha, gamma in fixed:
        case = dict(Q=Q0.copy(), state=s, action=a, reward=r, next_state=s2, next_action=a2, terminated=done,
                    alpha=alpha, gamma=gamma)
        cases.append(case)
    for _ in range(3):
        n_s, n_a = int(rng.integers(3, 7)), int(rng.integers(2, 5))
        s, s2 = (int(x) for x in rng.choice(n_s, 2, replace=False))
        cases.append(dict(Q=_q_table(rng, n_s, n_a), state=s, action=int(rng.integers(n_a)),
                          reward=float(rng.integers(-3, 3)), next_state=s2, next_action=int(rng.integers(n_a)),
                          terminated=bool(rng.random() < 0.3), alpha=float(np.round(rng.uniform(0.1, 0.9), 2)),
                          gamma=float(np.round(rng.uniform(0.5, 0.99), 2))))
    if not sarsa:
        for case in cases:
            del case["next_action"]
    return cases


def _sarsa_cases(rng):
    return _control_cases(rng, sarsa=True)


def _qlearn_cases(rng):
    return _control_cases(rng, sarsa=False)


def _sarsa_max(Q, state, action, reward, next_state, next_action, terminated, alpha, gamma=1.0):
    return ref.q_learning_update(Q, state, action, reward, next_state, terminated, alpha, gamma)


def _sarsa_past_terminal(Q, state, action, reward, next_state, next_action, terminated, alpha, gamma=1.0):
    return ref.sarsa_update(Q, state, action, reward, next_state, next_action, False, alpha, gamma)


def _sarsa_same_action(Q, state, action, reward, next_state, next_action, terminated, alpha, gamma=1.0):
    return ref.sarsa_update(Q, state, action, reward, next_state, action, terminated, alpha, gamma)


def _sarsa_updates_next(Q, state, action, reward, next_state, next_action, terminated, alpha, gamma=1.0):
    Q = np.array(Q, dtype=float)
    target = reward + gamma * Q[next_state, next_action] * (not terminated)
    Q[next_state, next_action] += alpha * (target - Q[state, action])
    return Q


def _sarsa_no_gamma(Q, state, action, reward, next_state, next_action, terminated, alpha, gamma=1.0):
    return ref.sarsa_update(Q, state, action, reward, next_state, next_action, terminated, alpha, 1.0)


def _ql_past_terminal(Q, state, action, reward, next_state, terminated, alpha, gamma=1.0):
    return ref.q_learning_update(Q, state, action, reward, next_state, False, alpha, gamma)


def _ql_same_action(Q, state, action, reward, next_state, terminated, alpha, gamma=1.0):
    return ref.sarsa_update(Q, state, action, reward, next_state, action, terminated, alpha, gamma)


def _ql_mean(Q, state, action, reward, next_state, terminated, alpha, gamma=1.0):
    Q = np.array(Q, dtype=float)
    target = reward + gamma * Q[next_state].mean() * (not terminated)
    Q[state, action] += alpha * (target - Q[state, action])
    return Q


def _ql_max_current_state(Q, state, action, reward, next_state, terminated, alpha, gamma=1.0):
    Q = np.array(Q, dtype=float)
    target = reward + gamma * Q[state].max() * (not terminated)
    Q[state, action] += alpha * (target - Q[state, action])
    return Q


def _ql_argmax_index(Q, state, action, reward, next_state, terminated, alpha, gamma=1.0):
    Q = np.array(Q, dtype=float)
    target = reward + gamma * Q[next_state].argmax() * (not terminated)  # the best action's index, not its value
    Q[state, action] += alpha * (target - Q[state, action])
    return Q


_FREQ = f"(The arrays are how often each action came out in {N_DRAWS} calls.) "

def _in_place_hint(arg: str) -> str:
    return (f"You changed `{arg}` in place and returned it, so the caller's table changed too: the cells after "
            f"this one (and the next update of an episode) would start from other numbers. Update a copy: "
            f"`{arg} = {arg}.copy()` first, then change and return the copy.")


_TERMINAL = ("A step into a terminal state (terminated=True) ends the episode: the target is just R. "
             "Its table entry may hold any stale number; do not bootstrap from it.")

register(
    Exercise(
        id="2.3", title="Epsilon-greedy action", reference=ref.epsilon_greedy, cases=_egreedy_cases,
        call=_action_frequencies, atol=0.05, rtol=0.0,
        hint=(f"The check calls your function {N_DRAWS} times per input and compares how often each action is "
              "picked (the numbers above are frequencies). With probability ε pick uniformly among *all* actions; "
              "otherwise pick uniformly among the actions tied for the largest q. Use only `rng` for randomness."),
        known_wrong=[
            KnownWrong("ties go to the first action", _eg_first_tie,
                       _FREQ + "np.argmax always returns the *first* best action, so a tie is never broken at random and "
                       "the other tied actions only get picked when exploring. Pick uniformly among "
                       "np.flatnonzero(q_values == q_values.max())."),
            KnownWrong("exploration excludes the greedy action", _eg_explore_excludes_greedy,
                       _FREQ + "When exploring, choose among *all* actions, the greedy one included: the greedy action's "
                       "probability is 1 − ε + ε/n, every other action's ε/n."),
            KnownWrong("epsilon the wrong way round", _eg_wrong_way,
                       _FREQ + "ε is the probability of *exploring* (a random action), not of acting greedily: "
                       "explore when rng.random() < ε."),
            KnownWrong("never explores", _eg_never_explores,
                       _FREQ + "Your function always acts greedily: with probability ε it must pick a uniformly random "
                       "action instead."),
            KnownWrong("last action never explored", _eg_off_by_one,
                       _FREQ + "The last action is never picked when exploring: rng.integers(low, high) excludes `high`, "
                       "so use rng.integers(n_actions) (or rng.integers(0, n_actions))."),
        ]),
    Exercise(
        id="2.1", title="Every-visit Monte Carlo update", reference=ref.mc_update, cases=_mc_cases,
        hint=("Walk the episode backwards, t = T−1, …, 0: G ← rewards[t] + γ·G, then "
              "V[states[t]] += α·(G − V[states[t]]), on every visit."),
        known_wrong=[
            KnownWrong("first-visit only", _mc_first_visit,
                       "You updated each state only once per episode (first-visit MC). This exercise is "
                       "*every-visit* MC: a state visited twice is updated twice, once with each visit's return."),
            KnownWrong("forwards in time", _mc_forwards,
                       "You updated in time order t = 0, 1, …. Walk the episode backwards (t = T−1, …, 0), as the "
                       "docstring says: when a state is visited twice, the order of its two updates changes the "
                       "result, and the earliest visit's return must come last."),
            KnownWrong("whole-episode return for every state", _mc_total_return,
                       "Each visit's target is the return *from that step on*, G_t = R_{t+1} + γ R_{t+2} + …, "
                       "not the return of the whole episode G_0."),
            KnownWrong("G_t misses its first reward", _mc_skips_first_reward,
                       "G_t starts with the reward that *follows* S_t, R_{t+1} = rewards[t]: "
                       "G_t = rewards[t] + γ·G_{t+1}."),
            KnownWrong("no step size", _mc_no_step_size,
                       "Constant-α MC moves V(s) a fraction α towards G_t: V(s) += α·(G_t − V(s)). "
                       "Setting V(s) = G_t is α = 1 (and forgets everything learned before)."),
            KnownWrong("discounts the immediate reward", _mc_discounts_reward,
                       "G ← R + γ·G: only the later rewards are discounted, not γ·(R + G)."),
            KnownWrong("updates V in place", updates_in_place(ref.mc_update, "V"), _in_place_hint("V")),
        ]),
    Exercise(
        id="2.2", title="TD(0) update", reference=ref.td0_update, cases=_td_cases,
        hint="δ = R + γ·V(S')·(not terminated) − V(S); then V(S) += α·δ, on a copy of V.",
        known_wrong=[
            KnownWrong("bootstraps past terminal", _td_past_terminal, _TERMINAL.replace("its table entry", "V(S')")),
            KnownWrong("sign of the TD error", _td_sign,
                       "The TD error is target minus estimate, δ = R + γV(S') − V(S); V(S) moves *towards* the target."),
            KnownWrong("no discount", _td_no_gamma, "Multiply the next state's value by γ: R + γ·V(S')."),
            KnownWrong("updates the next state", _td_updates_next,
                       "Update the state you *left*, V(S) = V[state], not V(S') = V[next_state]."),
            KnownWrong("forgot − V(S)", _td_no_baseline,
                       "The update adds α·δ with δ = R + γV(S') − V(S): you added α times the target without "
                       "subtracting the current estimate V(S)."),
            KnownWrong("updates V in place", updates_in_place(ref.td0_update, "V"), _in_place_hint("V")),
        ]),
    Exercise(
        id="2.4", title="SARSA update", reference=ref.sarsa_update, cases=_sarsa_cases,
        hint="target = R + γ·Q[S', A']·(not terminated); Q[S, A] += α·(target − Q[S, A]), on a copy of Q.",
        known_wrong=[
            KnownWrong("max instead of the next action", _sarsa_max,
                       "That is Q-learning (max over a'). SARSA is on-policy: it bootstraps from Q(S', A') for the "
                       "action A' = next_action the policy actually takes next."),
            KnownWrong("bootstraps past terminal", _sarsa_past_terminal, _TERMINAL),
            KnownWrong("same action in the next state", _sarsa_same_action,
                       "Use the next action A' = next_action in the target, Q[next_state, next_action], "
                       "not the current action."),
            KnownWrong("updates the next pair", _sarsa_updates_next,
                       "Update the pair you *left*, Q[state, action], not Q[next_state, next_action]."),
            KnownWrong("no discount", _sarsa_no_gamma, "Multiply the next value by γ: R + γ·Q(S', A')."),
            KnownWrong("updates Q in place", updates_in_place(ref.sarsa_update, "Q"), _in_place_hint("Q")),
        ]),
    Exercise(
        id="2.5", title="Q-learning update", reference=ref.q_learning_update, cases=_qlearn_cases,
        hint="target = R + γ·max_a Q[S', a]·(not terminated); Q[S, A] += α·(target − Q[S, A]), on a copy of Q.",
        known_wrong=[
            KnownWrong("bootstraps past terminal", _ql_past_terminal, _TERMINAL),
            KnownWrong("same action in the next state", _ql_same_action,
                       "Q-learning bootstraps from the *best* next action, max_a Q[next_state, a], "
                       "whatever action comes next; not from Q[next_state, action]."),
            KnownWrong("mean instead of max", _ql_mean,
                       "Take the max over the next state's actions, not the mean (that is expected SARSA under a "
                       "uniform policy)."),
            KnownWrong("max over the current state", _ql_max_current_state,
                       "The max is over the *next* state's actions, Q[next_state].max(), not Q[state]."),
            KnownWrong("argmax instead of max", _ql_argmax_index,
                       "argmax gives the index of the best action; the target needs its value, "
                       "Q[next_state].max()."),
            KnownWrong("updates Q in place", updates_in_place(ref.q_learning_update, "Q"), _in_place_hint("Q")),
        ]),
)
