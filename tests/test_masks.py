import pytest
import torch

from mtm.errors import ConfigError
from mtm.model.tokenizers import ContinuousTokenizer, ImageTokenizer
from mtm.model.masks import (
    MaskConfig,
    MaskMixture,
    TokenLayout,
    apply_valid,
    bc_mask,
    forward_dynamics_mask,
    goal_reaching_mask,
    imputation_mask,
    inverse_dynamics_mask,
    random_autoregressive_mask,
    random_mask,
    rcbc_mask,
    without_action_history,
)

torch.set_num_threads(1)

SRA = [("states", 1), ("returns", 1), ("actions", 1)]


def layout_for(L, modalities=SRA):
    return TokenLayout(modalities, L)


def visible_set(layout, mask):
    """{(modality, t, j)} of the visible tokens of a (N,) mask."""
    return {
        (layout.names[int(layout.modality[i])], int(layout.timestep[i]), int(layout.sub[i]))
        for i in torch.nonzero(mask).flatten().tolist()
    }


def tokens(layout, name, steps):
    return {(name, t, j) for t in steps for j in range(layout.tokens_per_step[name])}


def test_layout_is_modality_major_then_time_then_sub_token():
    layout = TokenLayout([("states", 1), ("images", 2), ("actions", 1)], 3, roles={"images": "states"})
    assert layout.num_tokens == 3 + 6 + 3
    assert layout.modality.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2]
    assert layout.timestep.tolist() == [0, 1, 2, 0, 0, 1, 1, 2, 2, 0, 1, 2]
    assert layout.sub.tolist() == [0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0]
    assert layout.slice("images") == slice(3, 9)
    assert layout.index("images", 2, 1) == 8 and layout.index("actions", 0) == 9
    # images are an observation: masked like states
    assert layout.role("states").tolist() == [True] * 9 + [False] * 3
    with pytest.raises(IndexError):
        layout.index("states", 3)
    with pytest.raises(ConfigError):
        TokenLayout([("states", 1), ("states", 1)], 2)
    assert layout.format(bc_mask(layout, 1)) == "states ##. | images ## ## .. | actions #.."


def test_a_modality_without_a_role_is_an_error():
    """Not silently masked as states: an unknown vector modality would then be shown wherever the
    states are (to a BC policy too) and hidden with them."""
    with pytest.raises(ConfigError, match="modality 'goal' has no role in the masks"):
        TokenLayout([("states", 1), ("goal", 1), ("actions", 1)], 3)
    with pytest.raises(ConfigError, match="'goal' has no role"):
        TokenLayout([("states", 1), ("goal", 1)], 3, roles={"goal": "targets"})
    with pytest.raises(ConfigError, match="'goal' has no role"):
        TokenLayout.from_tokenizers({"states": ContinuousTokenizer(2, [0, 0], [1, 1], name="states"),
                                     "goal": ContinuousTokenizer(2, [0, 0], [1, 1], name="goal")}, 3)
    frames = TokenLayout.from_tokenizers({"states": ContinuousTokenizer(2, [0, 0], [1, 1], name="states"),
                                          "camera": ImageTokenizer(16, 16, 3, patch_size=8, name="camera")}, 2)
    assert frames.role("states").all()  # an image key is an observation


def test_apply_valid_hides_every_token_of_padded_steps():
    layout = TokenLayout([("states", 1), ("images", 2), ("actions", 1)], 3, roles={"images": "states"})
    valid = torch.tensor([[True, True, False], [True, False, False]])
    out = apply_valid(torch.ones(layout.num_tokens, dtype=torch.bool), valid, layout)
    assert out.shape == (2, layout.num_tokens)
    for b in range(2):
        for i in range(layout.num_tokens):
            assert out[b, i] == valid[b, layout.timestep[i]]


# Reference definitions, written token by token, independent of the vectorised code.
def expected_bc(layout, c):
    return tokens(layout, "states", range(c + 1)) | tokens(layout, "actions", range(c))


def expected_rcbc(layout, c, returns):
    steps = range(layout.window) if returns == "all" else range(c + 1)
    return expected_bc(layout, c) | tokens(layout, "returns", steps)


def expected_fd(layout, c):
    return tokens(layout, "states", range(c + 1)) | tokens(layout, "actions", range(c + 1))


def expected_id(layout, c):
    return tokens(layout, "states", range(c + 2)) | tokens(layout, "actions", range(c))


def expected_goal(layout, c):
    return tokens(layout, "states", [*range(c + 1), layout.window - 1]) | tokens(layout, "actions", range(c))


@pytest.mark.parametrize(
    "modalities", [SRA, [("states", 1), ("actions", 3)], [("states", 2), ("returns", 1), ("actions", 1)]]
)
@pytest.mark.parametrize("L", range(1, 9))
def test_inference_masks_token_by_token(L, modalities):
    layout = layout_for(L, modalities)
    has_returns = "returns" in layout.names
    for c in range(L):
        assert visible_set(layout, bc_mask(layout, c)) == expected_bc(layout, c)
        assert visible_set(layout, goal_reaching_mask(layout, c)) == expected_goal(layout, c)
        for returns in ("all", "history"):
            expect = expected_rcbc(layout, c, returns) if has_returns else expected_bc(layout, c)
            assert visible_set(layout, rcbc_mask(layout, c, returns)) == expect
        if c + 1 < L:
            assert visible_set(layout, forward_dynamics_mask(layout, c)) == expected_fd(layout, c)
            assert visible_set(layout, inverse_dynamics_mask(layout, c)) == expected_id(layout, c)
        else:
            with pytest.raises(ValueError):
                forward_dynamics_mask(layout, c)
            with pytest.raises(ValueError):
                inverse_dynamics_mask(layout, c)
    with pytest.raises(ValueError):
        bc_mask(layout, L)
    with pytest.raises(ValueError):
        bc_mask(layout, -1)
    # defaults: the current step is the last one (bc / rcbc), L-2 (dynamics), 0 (goal reaching)
    assert torch.equal(bc_mask(layout), bc_mask(layout, L - 1))
    assert torch.equal(rcbc_mask(layout), rcbc_mask(layout, L - 1, "all"))
    assert torch.equal(goal_reaching_mask(layout), goal_reaching_mask(layout, 0))
    if L >= 2:
        assert torch.equal(forward_dynamics_mask(layout), forward_dynamics_mask(layout, L - 2))
    assert visible_set(layout, imputation_mask(layout)) == tokens(layout, "states", {0, L - 1})
    assert visible_set(layout, imputation_mask(layout, [L // 2])) == tokens(layout, "states", [L // 2])


def test_inference_masks_accept_one_current_step_per_sample():
    layout = layout_for(5)
    c = torch.tensor([0, 3, 1, 4])
    for fn in (bc_mask, rcbc_mask, goal_reaching_mask):
        batched = fn(layout, c)
        assert batched.shape == (4, layout.num_tokens)
        for b in range(4):
            assert torch.equal(batched[b], fn(layout, int(c[b])))
    batched = forward_dynamics_mask(layout, c[c < 4])
    assert torch.equal(batched[1], forward_dynamics_mask(layout, 3))
    with pytest.raises(ValueError):
        forward_dynamics_mask(layout, c)  # c = 4 has no next state in a window of 5


def test_rcbc_rejects_unknown_returns_option():
    with pytest.raises(ConfigError):
        rcbc_mask(layout_for(3), 1, returns="future")


def test_random_mask_keeps_a_per_sample_fraction_of_each_modality():
    layout = layout_for(4, [("states", 1), ("returns", 1), ("actions", 2)])
    g = torch.Generator().manual_seed(0)
    mask = random_mask(layout, 2000, g, keep_ratios=(0.5, 1.0))
    assert mask.shape == (2000, layout.num_tokens) and mask.dtype == torch.bool
    for name, n in (("states", 4), ("returns", 4), ("actions", 8)):
        counts = mask[:, layout.slice(name)].sum(1)
        assert set(counts.tolist()) == {n // 2, n}  # floor(r * n + 1/2) for r in {0.5, 1}
        assert abs((counts == n).float().mean().item() - 0.5) < 0.05
    # each modality draws its own ratio: every combination occurs
    pairs = {(int(a), int(b)) for a, b in zip(mask[:, :4].sum(1), mask[:, 8:].sum(1))}
    assert pairs == {(2, 4), (2, 8), (4, 4), (4, 8)}
    # kept positions are uniform: every state position is kept about 3/4 of the time
    assert ((mask[:, :4].float().mean(0) - 0.75).abs() < 0.05).all()
    # deterministic per generator seed, different per sample
    again = random_mask(layout, 2000, torch.Generator().manual_seed(0), keep_ratios=(0.5, 1.0))
    assert torch.equal(mask, again)
    assert len({tuple(r) for r in mask.tolist()}) > 50


def test_random_mask_always_shows_a_token():
    layout = layout_for(3)
    # floor(0.1 * 3 + 1/2) = 0: a small keep ratio can still keep no token of a modality
    mask = random_mask(layout, 50, torch.Generator().manual_seed(0), keep_ratios=(0.1,))
    assert mask.sum(1).tolist() == [1] * 50 and mask[:, 0].all()  # the state at t = 0


@pytest.mark.parametrize("ratios", [(0.0,), (0.5, 0.0), (1.5,), ()])
def test_keep_ratios_lie_in_0_exclusive_to_1_everywhere(ratios):
    """One range and one message for the config section, the mixture and the random masks."""
    message = r"keep_ratios must be in \(0, 1\], got \[" + ", ".join(map(str, ratios)) + r"\]"
    with pytest.raises(ValueError, match=message):
        MaskConfig(keep_ratios=list(ratios))
    with pytest.raises(ConfigError, match="mask " + message):
        MaskMixture({"random": 1.0}, keep_ratios=ratios)
    for make in (random_mask, random_autoregressive_mask):
        with pytest.raises(ConfigError, match="mask " + message):
            make(layout_for(3), 2, torch.Generator(), keep_ratios=ratios)


def autoregressive_patterns(layout):
    """{visible set: (role, t*)} for keep ratio 1: everything up to t*, minus the chosen role and
    the roles after it (states -> returns -> actions) at t* itself."""
    order = ["states", "returns", "actions"]
    patterns = {}
    for t_star in range(layout.window):
        for r, role in enumerate(order):
            vis = set()
            for name in layout.names:
                for t in range(layout.window):
                    if t < t_star or (t == t_star and order.index(name) < r):
                        vis |= tokens(layout, name, [t])
            if not vis:
                vis = {(layout.names[0], 0, 0)}
            patterns.setdefault(frozenset(vis), []).append((role, t_star))
    return patterns


def test_random_autoregressive_mask_structure_and_frequencies():
    L, B = 4, 8000
    layout = layout_for(L)
    patterns = autoregressive_patterns(layout)
    g = torch.Generator().manual_seed(0)
    mask = random_autoregressive_mask(layout, B, g, keep_ratios=(1.0,))
    role_counts = {"states": 0, "returns": 0, "actions": 0}
    for row in mask:
        found = patterns[frozenset(visible_set(layout, row))]  # KeyError = not an autoregressive pattern
        if len(found) == 1:
            role_counts[found[0][0]] += 1
    # (states, t*=0) shows s0 only, like (returns, 0): those rows are ambiguous and skipped above
    unambiguous = B * (1 - 0.3 / L)
    assert abs(role_counts["states"] / unambiguous - 0.2 * (L - 1) / L / (1 - 0.3 / L)) < 0.02
    assert abs(role_counts["returns"] / unambiguous - 0.1 * (L - 1) / L / (1 - 0.3 / L)) < 0.02
    assert abs(role_counts["actions"] / unambiguous - 0.7 / (1 - 0.3 / L)) < 0.02
    # t* uniform: the state at the last step is visible iff t* = L-1 and role is not states
    assert abs(mask[:, layout.index("states", L - 1)].float().mean().item() - 0.8 / L) < 0.02


def test_random_autoregressive_mask_with_random_keep_is_a_subset_of_a_pattern():
    layout = layout_for(4)
    patterns = [set(p) for p in autoregressive_patterns(layout)]
    mask = random_autoregressive_mask(layout, 500, torch.Generator().manual_seed(3), keep_ratios=(0.5,))
    for row in mask:
        vis = visible_set(layout, row)
        assert vis and any(vis <= p for p in patterns)
        for name in layout.names:
            assert row[layout.slice(name)].sum() <= 2


def test_random_autoregressive_role_weights_follow_the_present_roles():
    layout = layout_for(3, [("states", 1), ("actions", 1)])  # no returns modality
    mask = random_autoregressive_mask(
        layout, 300, torch.Generator().manual_seed(0), keep_ratios=(1.0,), role_weights={"actions": 1.0}
    )
    # role always actions: at t* the state is visible, the action hidden -> states >= actions per row
    s, a = mask[:, :3].sum(1), mask[:, 3:].sum(1)
    assert torch.equal(s, a + 1)
    with pytest.raises(ConfigError, match="positive weight for one of the roles the model has"):
        random_autoregressive_mask(layout, 2, torch.Generator(), role_weights={"returns": 1.0})
    with pytest.raises(ConfigError, match=r"mask role_weights: keys must be among"):
        random_autoregressive_mask(layout, 2, torch.Generator(), role_weights={"images": 1.0})


def test_mask_mixture_draws_a_mode_per_sample():
    L = 4
    layout = layout_for(L)
    # bc as the policy sees it by default: without its past actions (PolicyConfig.action_history)
    bc = {tuple(without_action_history(bc_mask(layout, c), layout).tolist()) for c in range(L)}
    fd = {tuple(forward_dynamics_mask(layout, c).tolist()) for c in range(L - 1)}
    mix = MaskMixture({"bc": 3.0, "forward_dynamics": 1.0})
    mask = mix(layout, 4000, torch.Generator().manual_seed(0))
    rows = [tuple(r) for r in mask.tolist()]
    assert all(r in bc or r in fd for r in rows)
    assert abs(sum(r in bc for r in rows) / len(rows) - 0.75) < 0.03
    assert len(set(rows)) == len(bc) + len(fd)  # every c drawn
    again = mix(layout, 4000, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)

    modes = ("random", "random_autoregressive", "rcbc", "inverse_dynamics", "goal_reaching", "imputation")
    everything = MaskMixture({m: 1.0 for m in modes})
    mask = everything(layout, 300, torch.Generator().manual_seed(1), device="cpu")
    assert mask.shape == (300, layout.num_tokens) and mask.any(1).all()


def test_mask_mixture_rejects_bad_configs():
    # the checks of MaskConfig, raised as ConfigError "mask <field> ..."
    with pytest.raises(ConfigError, match=r"mask modes: unknown mode\(s\) \['telepathy'\]"):
        MaskMixture({"bc": 1.0, "telepathy": 1.0})
    with pytest.raises(ConfigError, match="mask modes: weights must be >= 0 with a positive sum"):
        MaskMixture({"bc": 0.0})
    with pytest.raises(ConfigError, match="mask role_weights must be >= 0"):
        MaskMixture({"bc": 1.0}, role_weights={"actions": -1.0})
    with pytest.raises(ConfigError, match="window of at least 2"):
        MaskMixture({"forward_dynamics": 1.0})(layout_for(1), 4, torch.Generator())


def test_mask_mixture_from_config_and_its_string_form():
    assert MaskMixture.from_config("random_autoregressive").modes == {"random_autoregressive": 1.0}
    mix = MaskMixture.from_config(MaskConfig(modes={"random_autoregressive": 0.8, "bc": 0.2}, keep_ratios=[1.0]))
    assert mix.modes == {"random_autoregressive": 0.8, "bc": 0.2} and mix.keep_ratios == (1.0,)
    assert MaskConfig.parse("random_autoregressive:0.8, bc:0.2").modes == {"random_autoregressive": 0.8, "bc": 0.2}
    with pytest.raises(ConfigError, match="must be a number"):
        MaskMixture.from_config("bc:lots")
    with pytest.raises(ConfigError, match=r"unknown mode\(s\) \['random_autoregresive'\]"):
        MaskMixture.from_config("random_autoregresive")


def test_mask_config_is_a_config_section():
    from mtm.config import RunConfig, load_config

    cfg = load_config(RunConfig, None, ["train.mask.modes.bc=0.25", "train.mask.role_weights.actions=1.0"])
    assert cfg.train.mask.modes == {"random_autoregressive": 1.0, "bc": 0.25}
    assert cfg.train.mask.role_weights == {"states": 0.2, "returns": 0.1, "actions": 1.0}
    # the short string form (every config before the section existed) still loads, and can be refined
    cfg = load_config(RunConfig, None, ["train.mask=random_autoregressive:0.8,bc:0.2", "train.mask.keep_ratios=[1.0]"])
    assert cfg.train.mask == MaskConfig(modes={"random_autoregressive": 0.8, "bc": 0.2}, keep_ratios=[1.0])
    with pytest.raises(ConfigError, match=r"train\.mask\.keep_ratios must be in \(0, 1\]"):
        load_config(RunConfig, None, ["train.mask.keep_ratios=[0.0]"])
    with pytest.raises(ConfigError, match=r"train\.mask\.role_weights: keys must be among"):
        load_config(RunConfig, None, ["train.mask.role_weights.images=1"])


def test_old_string_mask_in_a_saved_config_loads(tmp_path):
    from mtm.config import RunConfig, load_config, parse_yaml, save_config

    old = tmp_path / "config.yaml"
    old.write_text("train:\n  mask: random_autoregressive:0.9,forward_dynamics:0.1\n")
    cfg = load_config(RunConfig, old)
    assert cfg.train.mask.modes == {"random_autoregressive": 0.9, "forward_dynamics": 0.1}
    saved = parse_yaml(save_config(cfg, tmp_path / "new.yaml").read_text())
    assert saved["train"]["mask"]["modes"] == {"random_autoregressive": 0.9, "forward_dynamics": 0.1}


def test_policy_modes_without_action_history_hide_every_action_and_nothing_else():
    layout = layout_for(4)
    gen = torch.Generator().manual_seed(0)
    with_history = MaskMixture({"bc": 1.0, "rcbc": 1.0}, action_history=True)(layout, 64, gen)
    gen = torch.Generator().manual_seed(0)  # the same draws of mode and current step
    without = MaskMixture.from_config(MaskConfig(modes={"bc": 1.0, "rcbc": 1.0}))(layout, 64, gen)  # the default
    actions = layout.role("actions")
    assert not without[:, actions].any() and with_history[:, actions].any()
    assert torch.equal(without[:, ~actions], with_history[:, ~actions])
    assert torch.equal(without, without_action_history(with_history, layout))  # the one definition
    # Training's bc / rcbc masks and the policy hide the past actions by default alike.
    from mtm.policy_config import PolicyConfig
    assert MaskConfig().action_history is PolicyConfig().action_history is False
    assert MaskMixture({"bc": 1.0}).action_history is False
    single = without_action_history(bc_mask(layout, 2), layout)  # an (N,) mask too
    assert torch.equal(single, bc_mask(layout, 2) & ~actions)
    # other modes are untouched: forward dynamics still shows the actions it conditions on
    fd = MaskMixture({"forward_dynamics": 1.0}, action_history=False)(layout, 8, torch.Generator().manual_seed(1))
    assert fd[:, actions].any()
