"""VTM-style configuration: `Key : value  # comment`, files applied in order,
then `--Key=value` from the command line. Unknown keys, and a key given twice in one
file, are errors; a later file or the command line overriding a key is the
documented way to change it. Values quoted in messages are shortened and escaped."""

from common.errors import ConfigError
from encoder.options import OPTIONS_BY_NAME, default_options

MAX_QUOTED_CHARACTERS = 60
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def quoted(text):
    """Text for an error message: control characters escaped, at most MAX_QUOTED_CHARACTERS."""
    escaped = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    if len(escaped) > MAX_QUOTED_CHARACTERS:
        escaped = escaped[:MAX_QUOTED_CHARACTERS] + f"… ({len(text)} characters)"
    return escaped


def convert(name, text, where):
    option = OPTIONS_BY_NAME.get(name)
    if option is None:
        raise ConfigError(f"{where}: unknown option '{quoted(name)}' (see encode --help)")
    text = text.strip()
    try:
        if option.type is bool:
            if text.lower() not in _TRUE | _FALSE:
                raise ValueError
            value = text.lower() in _TRUE
        else:
            value = option.type(text)
    except ValueError:
        raise ConfigError(f"{where}: {name} needs a {option.type.__name__} value, got '{quoted(text)}'") from None
    if option.choices and value not in option.choices:
        raise ConfigError(f"{where}: {name} must be one of {', '.join(option.choices)}, got '{quoted(text)}'")
    if option.lo is not None and not option.lo <= value <= option.hi:
        raise ConfigError(f"{where}: {name} must lie in [{option.lo}, {option.hi}], got {value}")
    return value


def parse_cfg_text(text, source):
    """{name: value} of one cfg file's text."""
    values, first_line = {}, {}
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        key, sep, value = content.partition(":")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{source}:{number}: malformed line (expected 'Key : value'): {quoted(line.strip())}")
        key = key.strip()
        if key in first_line:
            raise ConfigError(f"{source}:{number}: {quoted(key)} is already set on line {first_line[key]}")
        first_line[key] = number
        values[key] = convert(key, value, f"{source}:{number}")
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
        except UnicodeDecodeError as exc:
            raise ConfigError(f"cfg file {path} is not UTF-8 text (byte {exc.start})") from None
        options.update(parse_cfg_text(text, path))
    for name, text in overrides:
        options[name] = convert(name, text, "command line")
    return options
