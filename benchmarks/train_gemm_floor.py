"""The dense matrix products of one SAC / TD3 training step (batch 256, 256x256 networks, Pendulum sizes), timed
alone in NumPy float32 with 1 BLAS thread (CPU time): a floor under any implementation's step on this CPU.

Per env step, SAC: target (actor + 2 target critics forward), 2 critics forward + backward, one actor/alpha update
on average (actor forward + backward, 2 critics forward + backward to the action), CleanRL's extra actor forward for
the alpha loss; TD3: target (actor + 2 critics forward), 2 critics forward + backward, and every second step the
actor update (actor and critic 1 forward + backward). Backward = weight gradient and, except into the observation,
input gradient.

    python benchmarks/train_gemm_floor.py
"""
import os, time
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np
rng = np.random.default_rng(0)
B, H, O, A = 256, 256, 3, 1
def layer_fb(n_in, n_out, backward=True, need_gx=True):
    x = rng.normal(size=(B, n_in)).astype(np.float32); w = rng.normal(size=(n_out, n_in)).astype(np.float32)
    g = rng.normal(size=(B, n_out)).astype(np.float32)
    def f():
        y = x @ w.T
        if backward:
            gw = g.T @ x
            if need_gx:
                gx = g @ w
    return f
def net(n_in, n_out, backward, need_gx_first=False):
    fs = [layer_fb(n_in, H, backward, need_gx_first), layer_fb(H, H, backward), layer_fb(H, n_out, backward)]
    return lambda: [f() for f in fs]
critic_fb = net(O + A, 1, True); critic_f = net(O + A, 1, False); actor_f = net(O, 2 * A, False); actor_fb = net(O, 2 * A, True, True)
critic_fb_a = net(O + A, 1, True, True)  # backward to the action input (actor loss)
def sac_step():  # per env step: critic step + one actor/alpha step on average (policy_frequency 2, compensated)
    actor_f(); critic_f(); critic_f()              # target: a' ~ pi(s'), Q'_1, Q'_2
    critic_fb(); critic_fb()                       # Q_1, Q_2 forward + backward
    actor_fb(); critic_fb_a(); critic_fb_a()       # actor loss: pi(s), Q_1(s, a~), Q_2(s, a~), backward
    actor_f()                                      # CleanRL's extra draw for the alpha loss (arrayrl: none)
def td3_step():  # critic step every step, actor step every 2 steps
    actor_f(); critic_f(); critic_f(); critic_fb(); critic_fb()
    if td3_step.i % 2 == 0: actor_fb(); critic_fb_a()
    td3_step.i += 1
td3_step.i = 0
for name, f in (("sac", sac_step), ("td3", td3_step)):
    f()
    t = time.process_time(); n = 200
    for _ in range(n): f()
    print(f"{name}: dense matmuls of one env step {1e3 * (time.process_time() - t) / n:.2f} ms CPU (1 thread, float32)")
