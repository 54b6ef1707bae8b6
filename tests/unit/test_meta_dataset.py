"""Meta-Dataset: the official records read without TensorFlow and packed with their splits and
hierarchies, the official episode sampler's statistics, multi-source episodes keyed by
(seed, step, shard), and variable-size episodes through the engine (float64, against a plain
per-task loop)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mdsets import bilevel_source, dag_source, flat_source

from distmeta.algorithms import FOMAML, MAML, ProtoNet
from distmeta.config import load_config
from distmeta.data import ClassShards, pack_meta_dataset, read_spec
from distmeta.data.errors import ManifestError, ShardError
from distmeta.errors import DataError, NotFound
from distmeta.models.conv4 import conv4
from distmeta.tasks.multi_source import MultiSourceEpisodes, SourcePool
from distmeta.tasks.variable import EpisodeShape, Hierarchy, describe
from distmeta.types import EpisodeGroups

OMNIGLOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot"


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("md")
    flat_source(root / "records", "aircraft", (8, 3, 5), images=(24, 40))
    bilevel_source(root / "records", "omniglot", ([6, 7, 5], [6], [5, 6]))
    dag_source(root / "records", "ilsvrc_2012", ([6, 7, 5], [6], [5, 6]))
    return root, pack_meta_dataset(root / "records", str(root / "packed"), "all", image_size=16)


def test_the_three_spec_kinds_pack_with_their_splits_and_hierarchies(packed):
    root, out = packed
    assert sorted(out) == ["aircraft", "ilsvrc_2012", "omniglot"]
    spec = read_spec(root / "records" / "aircraft")
    assert [len(spec.splits[s]) for s in ("train", "val", "test")] == [8, 3, 5]
    assert [c.class_id for c in spec.splits["test"]] == list(range(11, 16))  # ids consecutive by split
    air = ClassShards(out["aircraft"], "train")
    assert air.image_shape == (3, 16, 16) and air.n_classes == 8
    assert air.counts().tolist() == [c.images for c in spec.splits["train"]]
    omni = ClassShards(out["omniglot"], "train").class_meta()
    assert [m["superclass"] for m in omni] == ["alphabet00"] * 6 + ["alphabet01"] * 7 + ["alphabet02"] * 5
    test = ClassShards(out["omniglot"], "test").class_meta()
    assert {m["superclass"] for m in test} == {"alphabet04", "alphabet05"}  # superclasses numbered across splits
    dag = ClassShards(out["ilsvrc_2012"], "train").class_meta()
    assert dag[0]["ancestors"] == ["traing0", "trainroot"]
    assert dag[-1]["ancestors"] == ["traing2", "trainroot", "trainshared"]  # the second parent's line too
    assert len({m["name"] for m in dag}) == 18


def test_a_test_only_source_packs_its_test_split_alone(tmp_path):
    folder = flat_source(tmp_path / "r", "traffic_sign", (0, 0, 6), images=8)
    out = pack_meta_dataset(folder, str(tmp_path / "ts"), "traffic_sign", image_size=16)["traffic_sign"]
    assert ClassShards(out, "test").n_classes == 6
    with pytest.raises(ManifestError, match="train"):
        ClassShards(out, "train")


def test_bad_records_and_specs_name_the_file(tmp_path):
    folder = flat_source(tmp_path / "r", "dtd", (5, 5, 5), images=8)
    data = bytearray((folder / "3.tfrecords").read_bytes())
    data[40] ^= 0xFF
    (folder / "3.tfrecords").write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"3\.tfrecords.*record 0: the data's CRC does not match"):
        pack_meta_dataset(folder, str(tmp_path / "out"), "dtd", image_size=16)
    (folder / "3.tfrecords").write_bytes(b"not a record file at all")
    with pytest.raises(ShardError, match=r"3\.tfrecords.*record 0: the length's CRC"):
        pack_meta_dataset(folder, str(tmp_path / "out"), "dtd", image_size=16)
    (folder / "3.tfrecords").unlink()
    with pytest.raises(NotFound, match=r"3\.tfrecords: the record file of class 3 .*dataset_spec\.json names"):
        pack_meta_dataset(folder, str(tmp_path / "out"), "dtd", image_size=16)
    assert not (tmp_path / "out" / "manifest.parquet").exists()  # nothing published
    spec = json.loads((folder / "dataset_spec.json").read_text())
    del spec["class_names"]["4"]
    (folder / "dataset_spec.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match=r"dataset_spec\.json: class_names has no entry for class '?4"):
        read_spec(folder)


def _metas(groups: list[int], key: str) -> list[dict]:
    if key == "superclass":
        return [{"superclass": f"a{g}"} for g, n in enumerate(groups) for _ in range(n)]
    return [{"ancestors": ["root", f"g{g}"]} for g, n in enumerate(groups) for _ in range(n)]


def test_sampler_statistics_match_the_papers_bounds():
    rng = np.random.default_rng(0)
    counts = rng.integers(20, 900, 120)
    shape = EpisodeShape()
    ways, totals, queries = [], [], []
    for i in range(400):
        classes, shots, query = describe(np.random.default_rng(i), counts, shape)
        assert len(set(classes.tolist())) == len(classes) and (shots >= 1).all()
        assert (shots + query <= counts[classes]).all()
        assert query == min(10, int((counts[classes] // 2).min()))
        ways.append(len(classes))
        totals.append(int(shots.sum()))
        queries.append(query)
    assert min(ways) == 5 and max(ways) == 50 and 24 < np.mean(ways) < 31  # uniform on [5, 50]
    assert max(totals) <= 500 and min(totals) >= 5 and max(queries) <= 10
    assert np.mean(totals) > 100  # the support sets really vary in size
    few = describe(np.random.default_rng(1), counts[:7], shape)[0]
    assert 5 <= len(few) <= 7  # ways bounded by the classes available


def test_hierarchies_keep_an_episode_within_one_alphabet_or_one_node():
    counts = np.full(60, 20)
    alphabets = _metas([4, 12, 20, 24], "superclass")
    shape = EpisodeShape()
    bilevel = Hierarchy.from_meta(alphabets, shape.min_ways)
    assert [len(g) for g in bilevel.groups] == [12, 20, 24]  # the 4-character alphabet is never drawn
    seen = set()
    for i in range(200):
        classes, _, _ = describe(np.random.default_rng(i), counts, shape, bilevel)
        supers = {alphabets[c]["superclass"] for c in classes}
        assert len(supers) == 1
        seen |= supers
    assert seen == {"a1", "a2", "a3"}
    dag_meta = _metas([6, 9, 45], "ancestors")
    dag = Hierarchy.from_meta(dag_meta, shape.min_ways)
    assert sorted(len(g) for g in dag.groups) == [6, 9, 45, 60]
    for i in range(200):
        classes, _, _ = describe(np.random.default_rng(i), counts, shape, dag)
        nodes = {n for c in classes for n in dag_meta[c]["ancestors"] if n != "root"}
        assert len(nodes) == 1 or len(classes) == 50  # one node's leaves, or the root's 60 cut to 50
    fixed = EpisodeShape(num_ways=5, num_support=1, num_query=15)
    classes, shots, query = describe(np.random.default_rng(0), counts, fixed, bilevel)
    assert len(classes) == 5 and shots.tolist() == [1] * 5 and query == 15
    with pytest.raises(ValueError, match="task.num_support"):
        EpisodeShape(num_support=(3, 1))


def test_multi_source_episodes_are_a_function_of_seed_step_and_shard(packed):
    _, out = packed

    def family():
        return MultiSourceEpisodes(tuple(SourcePool(n, ClassShards(p, "train")) for n, p in sorted(out.items())),
                                   EpisodeShape(max_ways_upper_bound=8))

    a, b = family().sample(6, 3, 7, 1), family().sample(6, 3, 7, 1)  # fresh readers
    assert a.n_tasks == 6 and len(a.groups) == len(b.groups)
    for x, y in zip(a.groups, b.groups, strict=True):
        assert x.classes == y.classes and torch.equal(x.support_x, y.support_x) and torch.equal(x.query_y, y.query_y)
    assert not torch.equal(a.groups[0].support_x, family().sample(6, 3, 8, 1).groups[0].support_x)
    sizes = {(g.support_x.shape[1], g.query_x.shape[1], g.classes) for g in a.groups}
    assert len(sizes) > 1  # variable way and shot
    draws = [s for step in range(40) for s, _ in family().draw(3, np.random.default_rng(step))]
    assert set(draws) == {0, 1, 2}
    weighted = MultiSourceEpisodes(family().sources, EpisodeShape(max_ways_upper_bound=8), (0.0, 1.0, 0.0))
    assert {s for s, _ in weighted.draw(10, np.random.default_rng(0))} == {1}


def test_sources_of_different_image_sizes_are_refused(packed, tmp_path):
    _, out = packed
    small = flat_source(tmp_path / "r", "dtd", (5, 5, 5), images=8)
    other = pack_meta_dataset(small, str(tmp_path / "dtd24"), "dtd", image_size=24)["dtd"]
    with pytest.raises(ValueError, match=r"data.sources: the sources' images differ in size .*dtd"):
        MultiSourceEpisodes((SourcePool("aircraft", ClassShards(out["aircraft"], "train")),
                             SourcePool("dtd", ClassShards(other, "train"))))


@pytest.mark.parametrize("rule", [MAML(inner_lr=0.1, inner_steps=2), FOMAML(inner_lr=0.1, inner_steps=1),
                                  ProtoNet()], ids=["maml", "fomaml", "protonet"])
def test_variable_size_vectorised_meta_gradients_equal_the_per_task_loop(packed, rule):
    _, out = packed
    family = MultiSourceEpisodes(tuple(SourcePool(n, ClassShards(p, "train")) for n, p in sorted(out.items())),
                                 EpisodeShape(max_ways_upper_bound=10))
    batch = family.sample(5, 0, 2, 0).to(dtype=torch.float64)
    torch.manual_seed(0)
    model = conv4(10, 3, 16, hidden=6).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    vectorised = rule.meta_gradient(model, params, batch)
    loop = type(rule)(**{**rule.__dict__, "vectorize": False})
    total = None
    for group in batch.groups:
        for i in range(group.n_tasks):
            g = loop.meta_gradient(model, params, group.slice(i, i + 1)).grads
            total = g if total is None else {k: total[k] + g[k] for k in g}
    for k in params:
        torch.testing.assert_close(vectorised.grads[k], total[k], rtol=1e-10, atol=1e-12)
    assert vectorised.n_tasks == 5 and math.isfinite(vectorised.metrics["query_loss"])
    if "head.weight" in params and not isinstance(rule, ProtoNet):
        most = max(g.classes for g in batch.groups)
        unused = vectorised.grads["head.weight"][most:]
        assert most < 10 and torch.count_nonzero(unused) == 0  # outputs past every episode's way: no gradient


def test_groups_keep_task_order_within_a_layout(packed):
    _, out = packed
    family = MultiSourceEpisodes((SourcePool("aircraft", ClassShards(out["aircraft"], "train")),),
                                 EpisodeShape(num_ways=5, num_support=2, num_query=3))
    batch = family.sample(4, 0, 0, 0)
    assert len(batch.groups) == 1 and batch.groups[0].n_tasks == 4  # fixed shapes: one vectorised group
    episodes = family.draw(4, np.random.default_rng(np.random.SeedSequence([0, 0, 0, 0])))
    assert torch.equal(batch.groups[0].support_x, EpisodeGroups.of([b for _, b in episodes]).groups[0].support_x)


def test_ranks_among_the_papers_methods():
    from distmeta.leaderboard import PAPER, SOURCES, rank

    best = rank(dict.fromkeys(SOURCES, 100.0), "all")
    assert best["average_rank"] == 1.0 and len(best["sources"]) == 10
    as_paper = rank(dict(zip(SOURCES, PAPER["imagenet"]["fo-Proto-MAML"], strict=True)), "imagenet")
    assert all(r == as_paper["paper_average_ranks"]["fo-Proto-MAML"] for r in [as_paper["average_rank"]])
    assert sum(as_paper["paper_average_ranks"].values()) + as_paper["average_rank"] == pytest.approx(36.0)  # 1..8
    two = rank({"omniglot": 70.0, "dtd": 0.0, "elsewhere": 99.0}, "imagenet")
    assert two["sources"] == ["omniglot", "dtd"] and two["rank"] == {"omniglot": 1.0, "dtd": 8.0}


def test_resnet18_gives_512_features_at_84_and_126_pixels():
    from distmeta.models import resnet18

    for size in (84, 126):
        model = resnet18(5, image_size=size).to("meta")
        assert model.n_features == 512 and model(torch.empty(2, 3, size, size, device="meta")).shape == (2, 5)


def test_config_keys_of_meta_dataset_are_checked(packed):
    _, out = packed
    base = ["task.family=meta_dataset", f"data.sources={json.dumps(sorted(out.values()))}", "model.name=conv4",
            "model.n_way=50", "model.in_channels=3", "model.image_size=16"]
    cfg = load_config(None, base + ["task.max_num_query=5", "data.source_weights=[1, 1, 2]"])
    assert cfg.source_paths() == sorted(out.values()) and cfg.task.way is None
    with pytest.raises(ValueError, match="task.way: unknown key for meta_dataset"):
        load_config(None, base + ["task.way=5"])
    with pytest.raises(ValueError, match=r"task.max_num_query='ten': expected int"):
        load_config(None, base + ["task.max_num_query=ten"])
    with pytest.raises(ValueError, match="data.source_weights=.*one weight per data.sources entry"):
        load_config(None, base + ["data.source_weights=[1, 2]"])
    with pytest.raises(ValueError, match="data.sources / data.eval_sources: only task.family=meta_dataset"):
        load_config(None, [f"data.sources={json.dumps(sorted(out.values()))}"])


@pytest.mark.skipif(not OMNIGLOT.is_dir(), reason=f"Omniglot arrays not found at {OMNIGLOT}")
def test_the_omniglot_packer_records_alphabets(tmp_path):
    from distmeta.data import pack_omniglot

    pack_omniglot(OMNIGLOT, str(tmp_path / "omni"), limit_classes=12, split_seed=None)
    metas = ClassShards(str(tmp_path / "omni"), "train").class_meta()
    assert [m["alphabet"] for m in metas] == ["Arcadian"] * 12 and metas[0]["superclass"] == "Arcadian"
    rows = [line.split(",") for line in (OMNIGLOT / "classes.csv").read_text().splitlines()[1:]]
    test = ClassShards(str(tmp_path / "omni"), "test").class_meta()
    by_char = {int(r[1]): r[4] for r in rows}
    assert all(m["alphabet"] == by_char[m["char_id"]] for m in test)
