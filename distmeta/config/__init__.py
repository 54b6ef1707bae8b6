"""The typed run config: load YAML, apply ``key=value`` overrides, validate.

Every error names the full key path (``algorithm.inner_lrr``), the file, or the value.
Sections: ``task``, ``model``, ``algorithm``, ``outer``, ``runtime``, ``data``, ``tracking``,
``checkpoint``, ``eval`` (:mod:`distmeta.config.sections`, :mod:`distmeta.config.named`); every
key carries its description, which ``--help`` and ``docs/config.md`` show
(:mod:`distmeta.config.keys`). The rule, model and task family sections are validated against
the hyper-parameters of the class they name, so a config can only name what exists.
"""

from distmeta.config.loading import (
    apply_overrides,
    differing_keys,
    flat_keys,
    load_config,
    parse_override,
    parse_yaml,
    read_yaml,
    validate,
)
from distmeta.config.named import IMAGE_FAMILIES, IMAGE_KEYS, MD_FAMILY, OMNIGLOT_KEYS
from distmeta.config.run import RunConfig
from distmeta.errors import ConfigError

__all__ = ["IMAGE_FAMILIES", "IMAGE_KEYS", "MD_FAMILY", "OMNIGLOT_KEYS", "ConfigError", "RunConfig", "apply_overrides",
           "differing_keys", "flat_keys", "load_config", "parse_override", "parse_yaml", "read_yaml", "validate"]
