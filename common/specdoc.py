"""Render docs/bitstream.md from the syntax declarations.

    python -m common.specdoc --write docs/bitstream.md    # regenerate
    python -m common.specdoc --check docs/bitstream.md    # exit 1 if out of date

The syntax tables come from the source text of common/syntax_structures.py
(element calls -> rows, `if`/`for` -> conditions, `rw.require` -> constraints)
and of the tool parameter structures its functions call, wherever they are
declared (common/tools/<tool>/syntax.py): each is rendered right after the
structure that first calls it. The code-point tables come from
common/codepoints.py, the semantics from the SEMANTICS of every module that
declares a rendered structure, the constants from common/limits.py and the
tools, and the tools' sections from the docstrings of TOOL_SECTIONS.
"""

import argparse
import ast
import inspect
import sys
from dataclasses import dataclass

from common import codepoints, limits, syntax_structures
from common.tools.lmsfc import arithmetic as lmsfc_arithmetic, codec as lmsfc_codec, entropy as lmsfc_entropy
from common.tools.lmsfc.syntax import lmsfc_group_payload
from common.tools.tokenwise import sq as tokenwise_sq, syntax as tokenwise_syntax
from common.tools.video_anchor import format as video_anchor

# (section title, module whose docstring below its first line is the section), after the constants
TOOL_SECTIONS = (("Token-wise scalar quantisation: entropy payload", tokenwise_sq),
                 ("Video anchor", video_anchor),
                 ("L-MSFC", lmsfc_codec),
                 ("L-MSFC integer arithmetic", lmsfc_arithmetic),
                 ("L-MSFC entropy coding", lmsfc_entropy))
# Structures a tool parses inside a tensor data unit's payload (rendered after the stream's own).
PAYLOAD_STRUCTURES = (lmsfc_group_payload,)

_DESCRIPTOR_CALLS = {"u", "flag", "ue", "se", "f32", "bytes", "rest"}
_INDENT = "&nbsp;" * 4


class _DropStructurePrefix(ast.NodeTransformer):
    """`s.ti_layout_idc` -> `ti_layout_idc` in rendered conditions."""

    def visit_Attribute(self, node):
        self.generic_visit(node)
        if isinstance(node.value, ast.Name) and node.value.id in ("s", "t"):
            return ast.Name(id=node.attr, ctx=ast.Load())
        return node


def _text(node):
    return ast.unparse(_DropStructurePrefix().visit(ast.parse(ast.unparse(node), mode="eval")).body)


@dataclass(frozen=True)
class SyntaxFunction:
    """One syntax structure's source: its function node and its module's globals (where the
    range expressions of its elements are evaluated)."""
    node: ast.FunctionDef
    namespace: dict

    @property
    def name(self):
        return self.node.name


def _value(node, namespace):
    return eval(compile(ast.Expression(node), "<spec>", "eval"), namespace)  # noqa: S307


def _kwargs(call):
    return {k.arg: k.value for k in call.keywords}


def _element_row(call, namespace):
    """(name, descriptor, range) of one rw.<descriptor>(...) call."""
    kind, args, kw = call.func.attr, call.args, _kwargs(call)
    if kind == "u":
        name, descriptor = args[2].value, f"u({_value(args[0], namespace)})"
    elif kind == "flag":
        name, descriptor = args[1].value, "u(1)"
    elif kind in ("ue", "se"):
        name, descriptor = args[1].value, f"{kind}(v)"
    elif kind == "f32":
        name, descriptor = args[1].value, "f(32)"
    elif kind == "bytes":
        name, descriptor = args[1].value, f"b(8)[{_text(args[2])}]"
    else:  # rest
        name, descriptor = args[1].value, "b(8)[*]"
    lo = kw.get("lo")
    hi = kw.get("hi")
    if kind == "ue" and hi is not None:
        lo_value = 0 if lo is None else _value(lo, namespace)
        value_range = f"{lo_value}..{_value(hi, namespace)}"
    elif lo is not None or hi is not None:
        lo_value = 0 if lo is None else _value(lo, namespace)
        value_range = f"{lo_value}..{_value(hi, namespace)}"
    else:
        value_range = ""
    return name, descriptor, value_range


def _rows(statements, depth, rows, namespace):
    pad = _INDENT * depth
    for st in statements:
        if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call):
            call = st.value
            if isinstance(call.func, ast.Attribute) and call.func.attr in _DESCRIPTOR_CALLS:
                name, descriptor, value_range = _element_row(call, namespace)
                rows.append((f"{pad}{name}", descriptor, value_range))
            elif isinstance(call.func, ast.Attribute) and call.func.attr == "byte_alignment":
                rows.append((f"{pad}byte_alignment( )", "u(1)×n", "each bit 0"))
            elif isinstance(call.func, ast.Attribute) and call.func.attr == "require":
                rows.append((f"{pad}*constraint: {call.args[1].value}*", "", ""))
            elif isinstance(call.func, ast.Name):
                rows.append((f"{pad}{call.func.id}( )", "", ""))
            else:
                raise ValueError(f"cannot render statement: {ast.unparse(st)}")
        elif isinstance(st, ast.If):
            rows.append((f"{pad}if( {_text(st.test)} )", "", ""))
            _rows(st.body, depth + 1, rows, namespace)
            if st.orelse:
                rows.append((f"{pad}else", "", ""))
                _rows(st.orelse, depth + 1, rows, namespace)
        elif isinstance(st, ast.For):
            count = _text(st.iter.args[2])
            rows.append((f"{pad}for( i = 0; i < {count}; i++ )", "", ""))
            _rows(st.body, depth + 1, rows, namespace)
        else:
            raise ValueError(f"cannot render statement: {ast.unparse(st)}")


def _is_syntax_function(node):
    return isinstance(node, ast.FunctionDef) and node.args.args and node.args.args[0].arg == "rw"


def _called_names(statements):
    """Names of the functions called as statements (structure calls such as `tensor_info(rw, t)`),
    in order, inside `if` and `for` too."""
    for st in statements:
        if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) and isinstance(st.value.func, ast.Name):
            yield st.value.func.id
        elif isinstance(st, (ast.If, ast.For)):
            yield from _called_names(st.body)
            yield from _called_names(st.orelse)


def syntax_functions():
    """The syntax-structure functions (first parameter `rw`): those of common/syntax_structures.py
    in source order, each followed by the structures it calls that another module declares (a
    tool's parameters, common/tools/<tool>/syntax.py), in the order of the calls."""
    tree = ast.parse(inspect.getsource(syntax_structures))
    local = [node for node in tree.body if _is_syntax_function(node)]
    local_names = {node.name for node in local}
    functions, seen = [], set()

    def visit(node, namespace):
        functions.append(SyntaxFunction(node, namespace))
        seen.add(node.name)
        for name in _called_names(node.body):
            target = namespace.get(name)
            if name in seen or name in local_names or not inspect.isfunction(target):
                continue
            (foreign,) = ast.parse(inspect.getsource(target)).body
            if _is_syntax_function(foreign):
                visit(foreign, target.__globals__)

    for node in local:
        visit(node, vars(syntax_structures))
    for function in PAYLOAD_STRUCTURES:
        (node,) = ast.parse(inspect.getsource(function)).body
        visit(node, function.__globals__)
    return functions


def semantics():
    """The SEMANTICS of every module that declares a rendered syntax structure, merged."""
    merged = {}
    for function in syntax_functions():
        merged.update(function.namespace.get("SEMANTICS", {}))
    return merged


def element_names():
    names = []
    for function in syntax_functions():
        rows = []
        _rows(function.node.body, 0, rows, function.namespace)
        names += [r[0].replace("&nbsp;", "") for r in rows if r[1] and not r[0].endswith(")")]
    return names


def _syntax_table(function):
    rows = []
    _rows(function.node.body, 1, rows, function.namespace)
    out = [f"### {function.name}( )", "", "| Syntax | Descriptor | Range |", "|---|---|---|",
           f"| {function.name}( ) {{ | | |"]
    out += [f"| {text} | {descriptor} | {value_range} |" for text, descriptor, value_range in rows]
    out += ["| } | | |", ""]
    return out


def _enum_table(enum_type):
    doc = (enum_type.__doc__ or "").strip()
    out = [f"**{enum_type.__name__}** — {doc}", "", "| value | name |", "|---|---|"]
    out += [f"| {member.value} | {member.name} |" for member in enum_type]
    return out + [""]


def _constants():
    names = ["MAX_TENSORS", "MAX_NAME_BYTES", "MAX_DIM", "MAX_DECODED_ELEMENTS", "QP_MIN", "QP_MAX"]
    out = ["| constant | value |", "|---|---|"]
    out += [f"| {n} | {getattr(limits, n) if hasattr(limits, n) else getattr(tokenwise_syntax, n)} |"
            for n in names]
    for n in ["STEP_EXPONENTS_PER_OCTAVE", "UNIT_STEP_EXPONENT", "MAX_ABS_LEVEL", "MAG_CAP", "RESCALE_LIMIT",
              "PROB_BITS", "FIRST_CHUNK", "EG_PREFIX_SYMBOLS", "EG_MAX_ORDER", "BYPASS_CHUNK_BITS",
              "OFFSET_CLIP", "SIG_RATE_THRESHOLDS", "LEVEL_RATE_THRESHOLDS"]:
        out.append(f"| {n} | {getattr(tokenwise_sq, n)} |")
    for n in ["ANCHOR_BIT_DEPTH", "MAX_PICTURE_DIM", "MAX_PICTURE_SAMPLES"]:
        out.append(f"| {n} | {getattr(video_anchor, n)} |")
    for n in ["FRACTION_BITS", "ACTIVATION_LIMIT", "WEIGHT_LIMIT", "MAX_CONV_INPUTS", "BIAS_LIMIT", "SIGMOID_BITS"]:
        out.append(f"| {n} | {getattr(lmsfc_arithmetic, n)} |")
    for n in ["SIGMA_MIN", "LADDER_STEPS_PER_OCTAVE", "NUM_SCALES", "FREQUENCY_BITS", "Z_LIMIT", "RATE_INDEX_MIN",
              "RATE_INDEX_MAX", "MAX_LEVEL", "TABLES_SHA256"]:
        out.append(f"| {n} | {getattr(lmsfc_entropy, n)} |")
    for n in ["SIG_LOCAL_CLASS", "LEVEL_LOCAL_CLASS"]:
        out.append(f"| {n} | {list(int(v) for v in getattr(tokenwise_sq, n))} |")
    fractions = ", ".join(float(v).hex() for v in tokenwise_sq.STEP_FRACTIONS)
    out.append(f"| STEP_FRACTIONS | {fractions} |")
    return out + [""]


def render():
    functions = syntax_functions()
    semantics_of = semantics()
    missing = [n for n in element_names() if n not in semantics_of]
    if missing:
        raise ValueError(f"elements without semantics: {missing}")
    out = ["# FCRS bitstream specification", "",
           "<!-- Generated by `python -m common.specdoc --write docs/bitstream.md` from "
           "common/syntax_structures.py, common/codepoints.py, common/limits.py and the tool folders "
           "common/tools/<tool>/ (syntax.py; tokenwise/sq.py, video_anchor/format.py, lmsfc/codec.py, "
           "lmsfc/arithmetic.py, lmsfc/entropy.py). Do not edit. -->", "",
           f"Version {codepoints.STREAM_VERSION_MAJOR}.{codepoints.STREAM_VERSION_MINOR}.", "",
           "## 1. Conventions", "",
           "Bits are written most significant first. Descriptors: u(n) unsigned n-bit integer; ue(v) "
           "unsigned Exp-Golomb-0 (at most 32 leading zeros); se(v) signed Exp-Golomb (k > 0 codes "
           "(k + 1) / 2 for odd k, −k / 2 for even k); f(32) IEEE-754 binary32; b(8)[n] n bytes; b(8)[*] "
           "the bytes up to the end of the unit. A value outside the Range column is a conformance error "
           "(the decoder stops with an error). Every unit payload ends byte-aligned.", "",
           "## 2. Stream structure", "",
           "```", (syntax_structures.__doc__.split("Stream layout::")[1]).strip("\n"), "```", "",
           "A decoder skips units of reserved type, rejects a stream that ends before END_OF_STREAM or "
           "has bytes after it, and decodes nothing before the feature parameter set. Before decoding any "
           "tensor it may refuse a stream whose decoding would exceed its memory budget (this software: "
           "each tool's estimate of its peak memory against 1 GiB by default, `decode --max-memory`); "
           "decoding time is proportional to the declared sizes.", "",
           "## 3. Syntax", ""]
    for function in functions:
        out += _syntax_table(function)
    out += ["## 4. Semantics", ""]
    for name in element_names():
        out.append(f"- **{name}**: {semantics_of[name]}")
    out += ["", "## 5. Code points", ""]
    for enum_type in (codepoints.UnitType, codepoints.Layout, codepoints.DType, codepoints.Tool,
                      codepoints.InnerCodec, codepoints.HashType):
        out += _enum_table(enum_type)
    out += ["## 6. Constants", ""] + _constants()
    for number, (title, module) in enumerate(TOOL_SECTIONS, start=7):
        out += [f"## {number}. {title}", ""]
        section = inspect.getdoc(module).split("\n", 1)[1].strip()
        out += [section.replace("## ", "### "), ""]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="FILE")
    mode.add_argument("--check", metavar="FILE")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(text)
        return 0
    with open(args.check, encoding="utf-8") as f:
        if f.read() != text:
            print(f"{args.check} is out of date: run `make spec`", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
