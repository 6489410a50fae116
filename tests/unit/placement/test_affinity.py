"""Model-aware routing (core.affinity): which models a job uses, what a backend holds, which
queued job a backend takes, and that no job is overtaken without bound."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from comfyrun.core.affinity import (
    Candidate,
    affinity,
    choose,
    count_overtaken,
    job_models,
    remember,
    workflow_models,
)
from comfyrun.core.placement import BackendState, BackendView, choose_backend


def test_workflow_models_are_the_files_its_loader_nodes_name() -> None:
    workflow = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "2": {
            "class_type": "LoraLoader",
            "inputs": {"lora_name": "style/ink.safetensors", "model": ["1", 0]},
        },
        "3": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "vit.safetensors"}},
        "4": {
            "class_type": "DualCLIPLoader",
            "inputs": {"clip_name1": "t5.sft", "clip_name2": "l"},
        },
        "5": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}},
        "6": {"class_type": "SomeCustomNode", "inputs": {"model_name": "not-a-file"}},
        "7": {"class_type": "KSampler", "inputs": {"seed": 1, "model": ["2", 0]}},
        "8": "not a node",
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": ["10", 0]}},  # a link: no name
    }
    assert workflow_models(workflow) == {
        "checkpoints/sd15.safetensors",
        "loras/style/ink.safetensors",
        "clip_vision/vit.safetensors",
        "text_encoders/t5.sft",
        "text_encoders/l",
        "upscale_models/4x.pth",
    }


def test_job_models_add_the_files_the_job_brings() -> None:
    workflow = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.ckpt"}}}
    options = {
        "models": [
            {"folder": "loras", "name": "x.safetensors", "url": "https://h/x"},
            {"folder": "unet", "name": "f.gguf", "url": "https://h/f"},
            "junk",
        ]
    }
    assert job_models(workflow, options) == {
        "checkpoints/a.ckpt",
        "loras/x.safetensors",
        "diffusion_models/f.gguf",
    }
    assert job_models(workflow, {}) == {"checkpoints/a.ckpt"}


def test_a_backend_holds_the_last_models_of_each_folder() -> None:
    held = remember((), {"checkpoints/a", "loras/x"})
    assert set(held) == {"checkpoints/a", "loras/x"}
    held = remember(held, {"checkpoints/b"})
    assert set(held) == {"checkpoints/b", "loras/x"}
    two = remember(remember((), {"checkpoints/a"}, keep=2), {"checkpoints/b"}, keep=2)
    assert set(remember(two, {"checkpoints/a"}, keep=2)) == {"checkpoints/a", "checkpoints/b"}
    # b was used before a: a third checkpoint pushes b out
    assert set(remember(remember(two, {"checkpoints/a"}, keep=2), {"checkpoints/c"}, keep=2)) == {
        "checkpoints/a",
        "checkpoints/c",
    }


def test_affinity_counts_the_held_models() -> None:
    assert affinity({"checkpoints/a", "loras/x"}, ("checkpoints/a", "loras/y")) == 1
    assert affinity(set(), ("checkpoints/a",)) == 0


def cand(job_id: str, *models: str, priority: int = 0) -> Candidate:
    return Candidate(job_id, priority, frozenset(models))


def test_a_backend_takes_the_first_job_whose_model_it_holds() -> None:
    queue = [cand("1", "checkpoints/b"), cand("2", "checkpoints/a"), cand("3", "checkpoints/a")]
    assert choose(queue, {"checkpoints/a"}, {}, max_overtake=8) == 1
    assert choose(queue, {"checkpoints/c"}, {}, max_overtake=8) == 0  # none fits: the head
    assert choose(queue, (), {}, max_overtake=8) == 0


def test_more_held_models_win_and_ties_keep_queue_order() -> None:
    queue = [
        cand("1", "checkpoints/a"),
        cand("2", "checkpoints/a", "loras/x"),
        cand("3", "checkpoints/a", "loras/x"),
    ]
    assert choose(queue, {"checkpoints/a", "loras/x"}, {}, max_overtake=8) == 1


def test_a_job_of_lower_priority_never_goes_first() -> None:
    queue = [cand("1", "checkpoints/b", priority=5), cand("2", "checkpoints/a", priority=0)]
    assert choose(queue, {"checkpoints/a"}, {}, max_overtake=8) == 0


def test_a_job_overtaken_enough_times_is_not_overtaken_again() -> None:
    queue = [cand("1", "checkpoints/b"), cand("2", "checkpoints/c"), cand("3", "checkpoints/a")]
    assert choose(queue, {"checkpoints/a"}, {"1": 2}, max_overtake=3) == 2
    assert choose(queue, {"checkpoints/a"}, {"1": 3}, max_overtake=3) == 0
    # only the jobs up to the first that may not be overtaken are eligible
    assert choose(queue, {"checkpoints/c"}, {"2": 3}, max_overtake=3) == 1
    assert choose(queue, {"checkpoints/a"}, {}, max_overtake=0) == 0


def test_count_overtaken_counts_the_jobs_ahead_of_the_chosen_one() -> None:
    queue = [cand("1"), cand("2"), cand("3"), cand("4")]
    counts = count_overtaken(queue, 2, {"3": 4, "9": 1})
    assert counts == {"1": 1, "2": 1, "9": 1}
    assert count_overtaken(queue, 0, counts) == {"2": 1, "9": 1}


def test_placement_prefers_the_backend_holding_the_models_among_equally_loaded_ones() -> None:
    views = [
        BackendView("a", BackendState.READY, last_assigned=1),
        BackendView("b", BackendState.READY, last_assigned=5),
        BackendView("c", BackendState.BUSY, inflight=1, last_assigned=0),
    ]
    holds = {"b": 1, "c": 2}
    assert choose_backend(views, affinity=lambda name: holds.get(name, 0)) == "b"
    assert choose_backend(views) == "a"  # without affinity: round robin
    # load comes first: an idle backend is never passed over for a busy one with the model
    assert choose_backend(views[::2], affinity=lambda name: holds.get(name, 0)) == "a"


CKPTS = st.sampled_from(["checkpoints/a", "checkpoints/b", "checkpoints/c", "checkpoints/d"])


@settings(max_examples=150, deadline=None)
@given(
    jobs=st.lists(st.tuples(CKPTS, st.integers(0, 2)), min_size=1, max_size=60),
    backends=st.lists(CKPTS, min_size=1, max_size=4),
    window=st.integers(1, 16),
    max_overtake=st.integers(0, 10),
    turns=st.lists(st.integers(0, 3), min_size=60, max_size=60),
)
def test_claims_respect_priority_and_bound_overtaking(
    jobs: list[tuple[str, int]],
    backends: list[str],
    window: int,
    max_overtake: int,
    turns: list[int],
) -> None:
    """Drain a queue by model-aware claims of backends taking turns: every claim takes a job of
    the best priority waiting, no job is overtaken more than `max_overtake` times, and every job
    is taken once."""
    queue = [cand(str(i), model, priority=p) for i, (model, p) in enumerate(jobs)]
    queue.sort(key=lambda c: -c.priority)  # claim order: priority, then submission (stable)
    holds: list[tuple[str, ...]] = [(model,) for model in backends]
    overtaken: dict[str, int] = {}
    taken: list[str] = []
    for turn in turns[: len(queue)]:
        b = turn % len(holds)
        candidates = queue[:window]
        i = choose(candidates, holds[b], overtaken, max_overtake)
        chosen = candidates[i]
        assert chosen.priority == max(c.priority for c in queue)
        overtaken = count_overtaken(candidates, i, overtaken)
        assert all(n <= max_overtake for n in overtaken.values())
        holds[b] = remember(holds[b], chosen.models)
        taken.append(chosen.job_id)
        queue.remove(chosen)
    while queue:
        i = choose(queue[:window], holds[0], overtaken, max_overtake)
        overtaken = count_overtaken(queue[:window], i, overtaken)
        assert all(n <= max_overtake for n in overtaken.values())
        taken.append(queue.pop(i).job_id)
    assert sorted(taken, key=int) == [str(i) for i in range(len(jobs))]


def test_with_nothing_held_here_a_job_no_other_backend_holds_goes_first() -> None:
    queue = [cand("1", "checkpoints/b"), cand("2", "checkpoints/c"), cand("3", "checkpoints/a")]
    others = {"checkpoints/b", "checkpoints/c"}
    assert choose(queue, {"checkpoints/x"}, {}, max_overtake=8, elsewhere=others) == 2
    # what is held here counts first
    assert choose(queue, {"checkpoints/c"}, {}, max_overtake=8, elsewhere=others) == 1
    # and the overtaking bound still holds
    assert choose(queue, {"checkpoints/x"}, {"1": 8}, max_overtake=8, elsewhere=others) == 0
