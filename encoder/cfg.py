"""VTM-style configuration: `Key : value  # comment`, files applied in order,
then `--Key=value` from the command line. Unknown keys are errors."""

from common.errors import ConfigError
from encoder.options import OPTIONS_BY_NAME, default_options

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def convert(name, text, where):
    option = OPTIONS_BY_NAME.get(name)
    if option is None:
        raise ConfigError(f"{where}: unknown option '{name}' (see encode --help)")
    text = text.strip()
    try:
        if option.type is bool:
            if text.lower() not in _TRUE | _FALSE:
                raise ValueError
            value = text.lower() in _TRUE
        else:
            value = option.type(text)
    except ValueError:
        raise ConfigError(f"{where}: {name} needs a {option.type.__name__} value, got '{text}'") from None
    if option.choices and value not in option.choices:
        raise ConfigError(f"{where}: {name} must be one of {', '.join(option.choices)}, got '{text}'")
    if option.lo is not None and not option.lo <= value <= option.hi:
        raise ConfigError(f"{where}: {name} must lie in [{option.lo}, {option.hi}], got {value}")
    return value


def parse_cfg_text(text, source):
    """{name: value} of one cfg file's text."""
    values = {}
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        key, sep, value = content.partition(":")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{source}:{number}: malformed line (expected 'Key : value'): {line.strip()}")
        values[key.strip()] = convert(key.strip(), value, f"{source}:{number}")
    return values


def resolve_options(cfg_paths, overrides):
    """Defaults, then each cfg file in order, then `--Key=value` overrides."""
    options = default_options()
    for path in cfg_paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read cfg file {path}: {exc.strerror}") from None
        options.update(parse_cfg_text(text, path))
    for name, text in overrides:
        options[name] = convert(name, text, "command line")
    return options
