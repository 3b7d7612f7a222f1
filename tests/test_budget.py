"""bench.budget: the one reader of configs/budgets.yaml's dotted keys (run, live view and report use it)."""

from bench.budget import dotted


def test_dotted_reads_nested_keys_and_gives_none_for_what_is_not_there():
    config = {"trainer": {"update_steps": 300, "batch_size": 64}, "cpu_max_steps": 5}
    assert dotted(config, "trainer.update_steps") == 300
    assert dotted(config, "cpu_max_steps") == 5
    assert dotted(config, "trainer.missing") is None
    assert dotted(config, "trainer.batch_size.deeper") is None, "a leaf is not a dict to descend into"
    assert dotted(config, "") is None, "an entry without the key (e.g. no cap_key) reads as None"
    assert dotted(None, "trainer") is None
