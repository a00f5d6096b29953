"""`kdl_positions`: node positions and syntax-error positions for KDL v2, checked against ckdl.

ckdl is the validator of record, so wherever both read a document they must agree on the node tree;
positions are checked against hand-counted expectations and against offsets recorded while
generating documents.
"""

from __future__ import annotations

import math
import pickle
import re
import time
from collections.abc import Callable
from typing import Any

import ckdl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.config.kdl_positions import KdlSyntaxError, SourceNode, locate_nodes

NameTree = list[tuple[str, "NameTree"]]
PosTree = list[tuple[str, int, int, "PosTree"]]

# The spec's character classes, written out independently of the module under test.
UNICODE_SPACES = "\t \u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u202f\u205f\u3000"
NEWLINES = "\n\r\x0b\x0c\x85\u2028\u2029"
NEWLINE_RE = re.compile(r"\r\n|[\n\r\x0b\x0c\x85\u2028\u2029]")
RESERVED = {"true", "false", "null", "inf", "-inf", "nan"}


def is_disallowed(char: str) -> bool:
    code = ord(char)
    return (
        code <= 0x08
        or 0x0E <= code <= 0x1F
        or code == 0x7F
        or 0xD800 <= code <= 0xDFFF
        or code in (0x200E, 0x200F, 0xFEFF)
        or 0x202A <= code <= 0x202E
        or 0x2066 <= code <= 0x2069
    )


def names(nodes: list[SourceNode]) -> NameTree:
    return [(node.name, names(node.children)) for node in nodes]


def positions(nodes: list[SourceNode]) -> PosTree:
    return [(node.name, node.line, node.column, positions(node.children)) for node in nodes]


def ckdl_names(text: str) -> NameTree:
    def walk(nodes: Any) -> NameTree:
        return [(node.name, walk(node.children)) for node in nodes]

    return walk(ckdl.parse(text, version=2).nodes)


def line_col(text: str, offset: int) -> tuple[int, int]:
    """Reference position of an offset: KDL newlines, CRLF as one, columns in code points."""
    breaks = list(NEWLINE_RE.finditer(text, 0, offset))
    if not breaks:
        return 1, offset + 1
    return len(breaks) + 1, offset - breaks[-1].end() + 1


def at(text: str, needle: str) -> tuple[int, int]:
    """Position of the only occurrence of `needle` in `text`."""
    assert text.count(needle) == 1, needle
    return line_col(text, text.index(needle))


# ---------------------------------------------------------------------------------------------
# 1. Hand-written documents


SERVER = """\
server {
    listen "0.0.0.0:8080"
    routes {
        route "api" {
            upstream "backend"
        }
    }
}
"""

SLASHDASH = """\
/-skipped 1 {
    inner
}
kept
/- (t)also-skipped
/-
  multi-line-skipped "x"
parent {
    /-child1
    child2 /-{ gone }
    child3 /-arg /-k=v {
        grandchild
    } /-{
        gone-too
    }
}
"""

COMMENTS = """\
// a comment { with "braces
/* block { " } /* nested } */ still comment " */ first /* { */ 1
/*
multi-line } " comment /* and { nested */
*/second
third // trailing { comment
fourth /- { not a child }
"""

RAW_STRINGS = """\
a #"quote " and brace } and /* not a comment"# {
    b ##"has "# inside } "##
}
#"raw name"# 1
##"name with "# and }"## {
    c
}
"""

MULTI_LINE = '''\
text """
    line one {
    "quoted" } /* not a comment */
    """ after=1
next
"""
  multi-line name
  """ {
    child
}
#"""
  raw } "multi"
  """# 2
last
'''

CONTINUATIONS = """\
a 1 \\
  2 \\  // comment after the backslash
  3 {
    b \\
      4
}
\\
c
d \\
  /* comment */ e=5
"""

TYPES = """\
(type)a
( spaced ) b
(t) /* c */ c (u8)1 k=(x)"y" (t) 2
("quoted type")d
(#"raw"#)e
"""

PROPS = """\
a k=v "quoted key"=1 #"raw key"#=#true spaced = "x" k2=(t)2 /-gone=1
b
"""

ESCAPES = """\
"a\\nb"
"tab\\there"
"\\u{1F600}\\u{41}"
"sp\\s\\""
"ws\\   escape"
"joined\\
   line"
#"\\n stays"#
after
"""

NUMBERS = "n #true #false #null #inf #-inf #nan 1 -2 +3 1_000 1.5e-3 0x1F_ab 0o7_7 0b1_0 1E+5 -inf-ish\nm\n"

ALMOST_NUMBERS = "n - + -- +- .x -.x +.x _1 a1 x.5 ?15 --5\nm\n"


HAND_WRITTEN: list[tuple[str, str, PosTree]] = [
    ("simple", "alpha\nbeta 1 2\n  gamma\n", [("alpha", 1, 1, []), ("beta", 2, 1, []), ("gamma", 3, 3, [])]),
    (
        "children",
        SERVER,
        [
            (
                "server",
                1,
                1,
                [
                    ("listen", 2, 5, []),
                    ("routes", 3, 5, [("route", 4, 9, [("upstream", 5, 13, [])])]),
                ],
            )
        ],
    ),
    (
        "semicolons on one line",
        "a; b;c {d; e}; f",
        [("a", 1, 1, []), ("b", 1, 4, []), ("c", 1, 6, [("d", 1, 9, []), ("e", 1, 12, [])]), ("f", 1, 16, [])],
    ),
    ("final node without terminator", "a { b }", [("a", 1, 1, [("b", 1, 5, [])])]),
    (
        "slashdash",
        SLASHDASH,
        [
            ("kept", 4, 1, []),
            ("parent", 8, 1, [("child2", 10, 5, []), ("child3", 11, 5, [("grandchild", 12, 9, [])])]),
        ],
    ),
    ("slashdash across a newline", "node foo /-\n  skipped bar\nnext", [("node", 1, 1, []), ("next", 3, 1, [])]),
    (
        "comments",
        COMMENTS,
        [
            ("first", *at(COMMENTS, "first"), []),
            ("second", 5, 3, []),
            ("third", 6, 1, []),
            ("fourth", 7, 1, []),
        ],
    ),
    (
        "raw strings",
        RAW_STRINGS,
        [
            ("a", 1, 1, [("b", 2, 5, [])]),
            ("raw name", 4, 1, []),
            ('name with "# and }', 5, 1, [("c", 6, 5, [])]),
        ],
    ),
    (
        "multi-line strings",
        MULTI_LINE,
        [
            ("text", 1, 1, []),
            ("next", 5, 1, []),
            ("multi-line name", 6, 1, [("child", 9, 5, [])]),
            ('raw } "multi"', 11, 1, []),
            ("last", 14, 1, []),
        ],
    ),
    ("line continuations", CONTINUATIONS, [("a", 1, 1, [("b", 4, 5, [])]), ("c", 8, 1, []), ("d", 9, 1, [])]),
    (
        "type annotations",
        TYPES,
        [("a", 1, 7, []), ("b", 2, 12, []), ("c", 3, 13, []), ("d", 4, 16, []), ("e", 5, 10, [])],
    ),
    ("properties", PROPS, [("a", 1, 1, []), ("b", 2, 1, [])]),
    (
        "escapes in names",
        ESCAPES,
        [
            ("a\nb", 1, 1, []),
            ("tab\there", 2, 1, []),
            ("\U0001f600A", 3, 1, []),
            ('sp "', 4, 1, []),
            ("wsescape", 5, 1, []),
            ("joinedline", 6, 1, []),
            ("\\n stays", 8, 1, []),
            ("after", 9, 1, []),
        ],
    ),
    (
        "columns count code points",
        '"ü" 1; ñ 2\n😀 x; y\n日本 語; z',
        [("ü", 1, 1, []), ("ñ", 1, 8, []), ("😀", 2, 1, []), ("y", 2, 6, []), ("日本", 3, 1, []), ("z", 3, 7, [])],
    ),
    (
        "every newline",
        "a\r\nb\rc\x85d\u2028e\u2029f\x0cg\nh",
        [(name, line, 1, []) for line, name in enumerate("abcdefgh", start=1)],
    ),
    ("unicode whitespace", "a\u3000b\u00a0c\n\u2003d\u205fe", [("a", 1, 1, []), ("d", 2, 2, [])]),
    ("byte order mark is not a column", "\ufeffa\nb", [("a", 1, 1, []), ("b", 2, 1, [])]),
    ("version marker", "/- kdl-version 2\nnode", [("node", 2, 1, [])]),
    ("keywords and numbers", NUMBERS, [("n", 1, 1, []), ("m", 2, 1, [])]),
    ("identifiers that are not numbers", ALMOST_NUMBERS, [("n", 1, 1, []), ("m", 2, 1, [])]),
    ("empty", "", []),
    ("only comments", "// one\n/* two\n*/\n\n  \\\n", []),
    ("quoted names", '"" 1\n"a b" {\n  "}"\n}', [("", 1, 1, []), ("a b", 2, 1, [("}", 3, 3, [])])]),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in HAND_WRITTEN], ids=[c[0] for c in HAND_WRITTEN])
def test_hand_written_positions(text: str, expected: PosTree) -> None:
    found = locate_nodes(text)
    assert positions(found) == expected
    assert names(found) == ckdl_names(text)


def test_deep_nesting() -> None:
    depth = 60
    text = "".join(f"{' ' * level}n{level} {{\n" for level in range(depth)) + "}\n" * depth
    nodes = locate_nodes(text)
    for level in range(depth):
        assert [(n.name, n.line, n.column) for n in nodes] == [(f"n{level}", level + 1, level + 1)]
        nodes = nodes[0].children
    assert nodes == []
    assert names(locate_nodes(text)) == ckdl_names(text)


def test_nesting_limit() -> None:
    # Deliberate: recursion would otherwise run out long before any real config gets this deep.
    text = "a {" * 150 + "}" * 150
    with pytest.raises(KdlSyntaxError) as caught:
        locate_nodes(text)
    assert (caught.value.line, caught.value.column) == (1, 3 * 100 + 3)
    assert "nested more than 100" in caught.value.message


def test_raw_and_quoted_name_decoding() -> None:
    text = '#"C:\\path"# 1\n"C:\\\\path" 2\n##"a"#b"## 3\n"\\u{10FFFF}\\u{0}" 4'
    assert [node.name for node in locate_nodes(text)] == ["C:\\path", "C:\\path", 'a"#b', "\U0010ffff\x00"]
    assert names(locate_nodes(text)) == ckdl_names(text)


def test_multi_line_name_dedent() -> None:
    text = '"""\n    first\n  \n      indented\n    \\s escaped space\r\n    """ 1\n'
    # The closing line's whitespace goes from every line, whitespace-only lines become empty, CRLF
    # becomes LF, and escapes are resolved after dedenting.
    assert [node.name for node in locate_nodes(text)] == ["first\n\n  indented\n  escaped space"]
    assert names(locate_nodes(text)) == ckdl_names(text)


# ---------------------------------------------------------------------------------------------
# 2. Generated documents: ckdl's emitter, then hand-assembled text with every kind of decoration

NAME_ALPHABET = [
    *"abcxyz-_.+019 ",
    *'é😀日"\\#={}();/*',
    "\n",
    "\t",
    "\u3000",
    "\r",
    "\x01",
    "\u200e",
    "\x7f",
    "\x0b",
    "\u2028",
]
INTERESTING_NAMES = ["", "a b", "#", '"', '""', '"#', "true", "-1", ".5", "inf", "}", "{", "/-", "//", "a\nb", " x "]
name_strategy = st.one_of(st.sampled_from(INTERESTING_NAMES), st.text(st.sampled_from(NAME_ALPHABET), max_size=8))


def emitter_safe(name: str) -> bool:
    # ckdl 1.0's v2 emitter writes these bare, producing text that no v2 parser (ckdl included) accepts.
    return name not in RESERVED and not re.match(r"[+-]?\.?[0-9]", name)


scalar_strategy = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    # ckdl 1.0's emitter gets the digits of most doubles wrong (and hangs near 1e-308): keep to
    # values it writes correctly, the structure is what matters here.
    st.sampled_from([0.0, -0.0, 0.5, -2.25, 0.125, 100.0, 1e10, 1.25e-7, 3e200, math.inf, -math.inf, math.nan]),
    st.booleans(),
    st.none(),
    name_strategy.filter(emitter_safe),
)
value_strategy = st.one_of(
    scalar_strategy,
    st.builds(ckdl.Value, st.sampled_from(["u8", "t y", "", "date-time"]), scalar_strategy),
)


def _ckdl_node(type_name: str | None, name: str, args: list[Any], props: dict[str, Any], children: list[Any]) -> Any:
    return ckdl.Node(type_name, name, args=args, properties=props, children=children)


def ckdl_node_strategy(children: st.SearchStrategy[list[Any]]) -> st.SearchStrategy[Any]:
    return st.builds(
        _ckdl_node,
        st.one_of(st.none(), st.sampled_from(["t", "a b", "u8"])),
        name_strategy.filter(emitter_safe),
        st.lists(value_strategy, max_size=3),
        st.dictionaries(name_strategy.filter(emitter_safe), value_strategy, max_size=2),
        children,
    )


ckdl_tree_strategy = st.recursive(
    ckdl_node_strategy(st.just([])),
    lambda inner: ckdl_node_strategy(st.lists(inner, max_size=3)),
    max_leaves=12,
)


@st.composite
def emitted_documents(draw: st.DrawFn) -> str:
    nodes = draw(st.lists(ckdl_tree_strategy, max_size=4))
    options = ckdl.EmitterOptions()
    options.version = ckdl.KdlVersion.kdl_2
    options.indent = draw(st.sampled_from([0, 1, 2, 4, 8]))
    # `minimal` writes newlines literally inside "..." strings, which v2 forbids.
    options.escape_mode = draw(st.sampled_from([ckdl.EscapeMode.default, ckdl.EscapeMode.ascii_mode]))
    options.identifier_mode = draw(st.sampled_from(list(ckdl.IdentifierMode)))
    text: str = ckdl.Document(nodes).dump(options)
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(emitted_documents())
def test_emitted_documents_match_ckdl(text: str) -> None:
    found = locate_nodes(text)
    assert names(found) == ckdl_names(text)
    check_positions_point_at_names(text, found)


def check_positions_point_at_names(text: str, nodes: list[SourceNode]) -> None:
    lines = NEWLINE_RE.split(text)
    for node in nodes:
        first = lines[node.line - 1][node.column - 1]
        assert first in '"#' or (node.name and first == node.name[0]), (node, first)
        check_positions_point_at_names(text, node.children)


# Hand-assembled documents. The builder records the offset of every name it writes, so it knows
# the exact position locate_nodes must report.


def bare_ok(name: str) -> bool:
    if not name or name in RESERVED or re.match(r"[+-]?\.?[0-9]", name):
        return False
    return not any(
        char in '\\/(){};[]"#=' or char in UNICODE_SPACES or char in NEWLINES or is_disallowed(char) for char in name
    )


def unicode_escape(char: str) -> str:
    return f"\\u{{{ord(char):x}}}"


SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


class DocBuilder:
    """Writes a random valid KDL document through Hypothesis draws, remembering where names start."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.parts: list[str] = []
        self.size = 0
        self.newline = draw(st.sampled_from(["\n", "\r\n", "\n", "\r", "\u2028", "\x85", "\x0c", "\u2029"]))

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def choose(self, options: list[str]) -> str:
        return self.draw(st.sampled_from(options))

    def chance(self, probability: float = 0.3) -> bool:
        return self.draw(st.floats(0, 1)) < probability

    # Strings in every syntax.

    def string(self, value: str) -> str:
        syntaxes: list[Callable[[str], str]] = [self.quoted, self.multi_line]
        if bare_ok(value):
            syntaxes += [lambda v: v] * 3
        if value and not value.startswith('"') and not any(c in NEWLINES or is_disallowed(c) for c in value):
            syntaxes.append(self.raw)
        if self.raw_multi_line_ok(value):
            syntaxes.append(self.raw_multi_line)
        return self.draw(st.sampled_from(syntaxes))(value)

    def quoted(self, value: str) -> str:
        pieces: list[str] = []
        for char in value:
            if char in SHORT_ESCAPES:
                pieces.append(SHORT_ESCAPES[char])
            elif char in NEWLINES or is_disallowed(char):
                pieces.append(unicode_escape(char))
            elif char == " " and self.chance(0.2):
                pieces.append("\\s")
            elif self.chance(0.05):
                pieces.append(unicode_escape(char))
            else:
                pieces.append(char)
        if self.chance(0.2):
            # A whitespace escape vanishes with all the whitespace after it, so not before a space.
            index = self.draw(st.integers(0, len(pieces)))
            if index == len(pieces) or pieces[index][0] not in UNICODE_SPACES:
                pieces.insert(index, "\\" + self.choose([" ", "\t  ", self.newline + "   ", self.newline * 2]))
        return '"' + "".join(pieces) + '"'

    def raw(self, value: str) -> str:
        hashes = 1
        while '"' + "#" * hashes in value:
            hashes += 1
        hashes += self.draw(st.integers(0, 2))
        return "#" * hashes + '"' + value + '"' + "#" * hashes

    def multi_line(self, value: str) -> str:
        indent = self.choose(["", "  ", "\t", "    ", "\u3000 "])
        lines = []
        for line in value.split("\n"):
            escaped = "".join(
                SHORT_ESCAPES.get(char) or (unicode_escape(char) if char in NEWLINES or is_disallowed(char) else char)
                for char in line
            )
            if escaped and all(char in UNICODE_SPACES for char in escaped):
                escaped = "".join(map(unicode_escape, escaped))  # literal blank lines would read as empty
            lines.append(indent + escaped if escaped else self.choose(["", indent]))
        newline = self.newline
        return '"""' + newline + newline.join(lines) + newline + indent + '"""'

    def raw_multi_line_ok(self, value: str) -> bool:
        return not any((char in NEWLINES and char != "\n") or is_disallowed(char) for char in value) and not any(
            line and all(c in UNICODE_SPACES for c in line) for line in value.split("\n")
        )

    def raw_multi_line(self, value: str) -> str:
        hashes = 1
        while '"""' + "#" * hashes in value:
            hashes += 1
        indent = self.choose(["", "  ", "\t"])
        newline = self.newline
        body = newline.join(indent + line if line else "" for line in value.split("\n"))
        return "#" * hashes + '"""' + newline + body + newline + indent + '"""' + "#" * hashes

    # Whitespace, comments and values.

    def gap(self) -> str:
        """node-space between entries."""
        return self.choose(
            [
                " ",
                " ",
                "  ",
                "\t",
                "\u3000",
                " \\" + self.newline + "    ",
                ' /* { } " */ ',
                " \\ // c" + self.newline + " ",
            ]
        )

    def line_space(self) -> None:
        """Blank lines and comments between nodes."""
        for _ in range(self.draw(st.integers(0, 2))):
            self.write(
                self.choose(
                    [
                        self.newline,
                        "  " + self.newline,
                        '// a } comment "' + self.newline,
                        '/* a { /* nested } */ " */ ',
                        "/*" + self.newline + "}" + self.newline + "*/" + self.newline,
                        "\\" + self.newline,
                        "\u3000",
                    ]
                )
            )

    def value(self) -> str:
        typed = self.choose(["", "", "", "(t)", "( t )", '("a b")', "(t) "])
        kind = self.choose(["string", "string", "number", "keyword"])
        if kind == "number":
            body = self.choose(
                ["0", "-1", "+2", "1_000", "3.25", "-1.5e-3", "1E+5", "0x1F_ab", "0o7_7", "0b1_0", "1_e5"]
            )
        elif kind == "keyword":
            body = self.choose(["#true", "#false", "#null", "#inf", "#-inf", "#nan"])
        else:
            body = self.string(self.draw(name_strategy))
        return typed + body

    def entry(self) -> str:
        if self.chance(0.4):
            key = self.string(self.draw(name_strategy))
            return key + self.choose(["=", "=", " = ", "= "]) + self.value()
        return self.value()

    def slashdash(self) -> str:
        return "/-" + self.choose(["", " ", self.newline + "  ", " // gone" + self.newline, "/* c */ "])

    # Nodes.

    def nodes(self, depth: int, inline: bool) -> PosTree:
        found: PosTree = []
        count = self.draw(st.integers(0, 3 if depth < 2 else 1))
        for index in range(count):
            if not inline:
                self.line_space()
            if depth < 2 and self.chance(0.15):
                self.write(self.slashdash())
                self.node(depth + 1, inline)
                self.terminator(inline, last=False)
                if inline:
                    self.write(" ")
            node = self.node(depth, inline)
            found.append(node)
            last = index == count - 1
            self.terminator(inline, last)
            if inline and not last:
                self.write(" ")
        if not inline:
            self.line_space()
        return found

    def terminator(self, inline: bool, last: bool) -> None:
        if inline:
            self.write(self.choose(["", ";"]) if last else ";")
        else:
            self.write(self.choose([self.newline, self.newline, ";" + self.newline, " // end" + self.newline]))

    def node(self, depth: int, inline: bool) -> tuple[str, int, int, PosTree]:
        """Writes one node; returns its name, the offset of the name (column left 0), its children."""
        self.write(self.choose(["", "", "(t)", "( t ) ", '(#"raw"#)', "(t)/* c */"]))
        name = self.draw(name_strategy)
        start = self.size
        self.write(self.string(name))
        for _ in range(self.draw(st.integers(0, 3))):
            self.write(self.gap())
            if self.chance(0.2):
                self.write(self.slashdash())
            self.write(self.entry())
        children: PosTree = []
        # Grammar order: entries, then any /-{...} blocks around at most one real {...} block.
        blocks = self.choose(["", "", "real", "gone real", "real gone", "gone"]) if depth < 3 else ""
        for block in blocks.split():
            self.write(" ")
            child_inline = inline or self.chance(0.4)
            if block == "gone":
                self.write(self.slashdash())
            self.write("{" + (" " if child_inline else self.newline))
            kids = self.nodes(depth + 1, child_inline)
            self.write("}")
            if block == "real":
                children = kids
        return (name, start, 0, children)


def resolve(text: str, tree: PosTree, shift: int) -> PosTree:
    """Turns the recorded offsets into line and column."""
    return [
        (name, *line_col(text, offset + shift), resolve(text, children, shift)) for name, offset, _, children in tree
    ]


@st.composite
def assembled_documents(draw: st.DrawFn) -> tuple[str, PosTree]:
    builder = DocBuilder(draw)
    bom = draw(st.booleans())
    if bom:
        builder.write("\ufeff")
    tree = builder.nodes(0, inline=False)
    text = "".join(builder.parts)
    # locate_nodes does not count a leading BOM as a column.
    return text, resolve(text[1:] if bom else text, tree, -1 if bom else 0)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assembled_documents())
def test_assembled_documents_positions(document: tuple[str, PosTree]) -> None:
    text, expected = document
    assert positions(locate_nodes(text)) == expected
    assert ckdl_names(text) == [(name, strip(children)) for name, _, _, children in expected]


def strip(tree: PosTree) -> NameTree:
    return [(name, strip(children)) for name, _, _, children in tree]


# ---------------------------------------------------------------------------------------------
# 3. Syntax errors: ckdl rejects them, and locate_nodes says where


SYNTAX_ERRORS: list[tuple[str, str, int, int, str]] = [
    ("unclosed string", 'a "abc\nb', 1, 3, "unclosed string"),
    ("unclosed string at end", 'a\nb "abc', 2, 3, "unclosed string"),
    ("unclosed multi-line string", 'a """\n  foo\n', 1, 3, "unclosed multi-line string"),
    ("unclosed raw string", 'a #"abc\n"#', 1, 3, "unclosed raw string"),
    ("unclosed raw multi-line string", 'a\nb #"""\n  x\n  """', 2, 3, "unclosed raw multi-line"),
    ("unclosed brace", "a {\n  b\n", 1, 3, "never closed"),
    ("unclosed outer brace", "x\na {\n  b {\n  }\n", 2, 3, "never closed"),
    ("stray closing brace", "a\n}\n", 2, 1, "'}'"),
    ("extra closing brace", "a {\n}\n}", 3, 1, "'}'"),
    ("v1 true", "a true", 1, 3, "#true"),
    ("v1 false property", "a\nb k=false", 2, 5, "#false"),
    ("v1 null", "a 1 null", 1, 5, "#null"),
    ("v1 true as node name", "true", 1, 1, "#true"),
    ("bare inf", "a inf", 1, 3, "#inf"),
    ("bare -inf", "a -inf", 1, 3, "#-inf"),
    ("array", "a [1, 2]", 1, 3, "arrays"),
    ("array after a name", "a\nb[1]", 2, 2, "arrays"),
    ("garbage parenthesis", "a\n  b )", 2, 5, "')'"),
    ("garbage equals", "a = 1", 1, 3, "'='"),
    ("control character", "a\n b\x01c", 2, 3, "U+0001"),
    ("delete character in a comment", "// \x7f\na", 1, 4, "U+007F"),
    ("bidi control", "a \u200ex", 1, 3, "U+200E"),
    ("byte order mark later", "a\n\ufeffb", 2, 1, "byte order mark"),
    ("missing terminator after children", "a {b} c", 1, 7, "after the children block"),
    ("missing space after children", "a {b}c", 1, 6, "after the children block"),
    ("missing space between strings", 'a "x""y"', 1, 6, "whitespace"),
    ("missing space after number", 'a 1"x"', 1, 4, "whitespace"),
    ("missing space before children", "node{}", 1, 5, "whitespace"),
    ("missing space before argument", 'node"x"', 1, 5, "whitespace"),
    ("two children blocks", "a {b} {c}", 1, 7, "only one children block"),
    ("entry after slashdashed children", "a /-{b} 1", 1, 9, "before children blocks"),
    ("number with a dot and nothing", "a 1.", 1, 3, "invalid number"),
    ("hex without digits", "a\n  0x", 2, 3, "a node name cannot be a number"),
    ("hex without digits as value", "a 0x", 1, 3, "invalid number"),
    ("exponent without digits", "a 1e", 1, 3, "invalid number"),
    ("no leading digit", "a .5", 1, 3, "invalid number"),
    ("binary digit out of range", "a 0b2", 1, 3, "invalid number"),
    ("octal digit out of range", "a 0o8", 1, 3, "invalid number"),
    ("number-like identifier", "a 1abc", 1, 3, "invalid number"),
    ("number as node name", "-1", 1, 1, "cannot be a number"),
    ("unknown keyword", "a #foo", 1, 3, "unknown keyword"),
    ("keyword as node name", "#true", 1, 1, "keyword"),
    ("keyword as property name", "a #true=1", 1, 3, "property name must be a string"),
    ("invalid escape", 'a "\\q"', 1, 4, "invalid escape"),
    ("solidus is no escape in v2", 'a "\\/"', 1, 4, "invalid escape"),
    ("surrogate escape", 'a\n"\\u{D800}"', 2, 2, "not a Unicode scalar value"),
    ("escape above the maximum", 'a "\\u{110000}"', 1, 4, "not a Unicode scalar value"),
    ("unicode escape without braces", 'a "\\u41"', 1, 4, "\\u needs"),
    ("single-line triple quotes", 'a """x"""', 1, 3, "newline"),
    ("raw triple quotes on one line", 'a #"""x"""#', 1, 3, "newline"),
    ("multi-line closing quotes after text", 'a """\n  x"""', 2, 4, "own line"),
    ("multi-line indentation mismatch", 'a """\n    x\n  y\n   """', 3, 1, "same whitespace"),
    ("multi-line closing indent with tab", 'a """\n  x\n \t"""', 2, 1, "same whitespace"),
    ("whitespace escape joining the closing line", 'a """\n  x\\\n  """', 3, 3, "own line"),
    ("legacy raw string", 'a r"x"', 1, 4, "whitespace"),
    ("unbalanced raw hashes", 'a ##"x"#', 1, 3, "unclosed raw string"),
    ("slashdash at the end", "a /-", 1, 3, "'/-' must be followed"),
    ("slashdash alone", "/-", 1, 1, "'/-' must be followed"),
    ("slashdash before closing brace", "a {\n  b\n  /-\n}", 3, 3, "'/-' must be followed"),
    ("slashdash before semicolon", "a 1 /-;", 1, 5, "'/-' must be followed"),
    ("slashdash before a property value", "a k=/-1", 1, 5, "a value after '='"),
    ("slashdash between type and value", "a (t)/-1", 1, 6, "a value after the type annotation"),
    ("type annotation alone", "(t)", 1, 4, "a node name"),
    ("type annotation without a value", "a (t)\n", 1, 6, "a value after the type annotation"),
    ("empty type annotation", "a ()1", 1, 4, "empty type annotation"),
    ("number as type", "a (1)2", 1, 4, "cannot be a number"),
    ("type on a property name", "a (t)k=1", 1, 3, "property name cannot have a type"),
    ("property without a value", "a k=\nb", 1, 5, "a value after '='"),
    ("property with a number as name", "a 1=2", 1, 3, "property name must be a string"),
    ("property with a number as name and spaces", "a 1 = 2", 1, 3, "property name must be a string"),
    ("unclosed block comment", "a /* x\n", 1, 3, "unclosed '/*'"),
    ("unclosed nested block comment", "/* /* */ a", 1, 1, "unclosed '/*'"),
    ("text after a line continuation", "a \\ b", 1, 3, "line continuation"),
    ("hash in identifier", "foo#bar", 1, 4, "whitespace"),
    ("quote in identifier", 'foo"bar"', 1, 4, "whitespace"),
    ("backslash in identifier", "foo\\bar", 1, 4, "line continuation"),
    ("error after CRLF lines", 'a\r\nb\r\nc {\r\n  d "x\r\n}', 4, 5, "unclosed string"),
    ("error after a multi-line string", 'a """\n  x\n  """\nb [', 4, 3, "arrays"),
    ("error after unicode", "ünï 😀 x\n  b )", 2, 5, "')'"),
]


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"), [c[1:] for c in SYNTAX_ERRORS], ids=[c[0] for c in SYNTAX_ERRORS]
)
def test_syntax_errors(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(ckdl.ParseError):
        ckdl.parse(text, version=2)
    with pytest.raises(KdlSyntaxError) as caught:
        locate_nodes(text)
    error = caught.value
    assert (error.line, error.column) == (line, column), error.message
    assert fragment in error.message
    assert str(error) == f"line {line}, column {column}: {error.message}"


def test_syntax_error_is_picklable() -> None:
    error = KdlSyntaxError(3, 7, "unclosed string")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.line, copy.column, copy.message, str(copy)) == (3, 7, "unclosed string", str(error))


def test_first_error_wins_over_a_later_disallowed_character() -> None:
    with pytest.raises(KdlSyntaxError) as caught:
        locate_nodes('a "x\nb \x01')
    assert (caught.value.line, caught.value.column) == (1, 3)
    with pytest.raises(KdlSyntaxError) as caught:
        locate_nodes('a \x01 "x\n')
    assert (caught.value.line, caught.value.column) == (1, 3)


# ---------------------------------------------------------------------------------------------
# 4. Whatever ckdl accepts, locate_nodes accepts (and reads the same tree)

# Token soup: mostly invalid, partly valid. Good atoms come three times to raise the share that
# parses; strings hold no backslash, so the only one is the line-continuation separator.
GOOD_ATOMS = [
    "a", "b-c", ".x", "-", "ü", '"q"', '"a b"', '#"r"#', '"""\n  m\n  """', '#"""\n  r\n  """#', "1",
    "-2.5e3", "0x1F", "#true", "#null", "#-inf", "(t)a", "k=1", 'k=(t)"v"', "{", "}", "/-",
]  # fmt: skip
BAD_ATOMS = ["true", "1a", "[", "=", "#", "(", ")", '"', "*/", "1.", "{", "}", "/-", "\\"]
VALUE_LIKE = {"a", "b-c", ".x", "-", "ü", '"q"', '"a b"', "1", "-2.5e3", "0x1F", "#true", "#null", "#-inf", "}"}
SOUP_SEPARATORS = [" ", " ", " ", "\n", "\n", "\t", " /* c */ ", " // c\n", " \\\n", "", "\r\n", ";"]

# What ckdl 1.0 accepts although KDL 2.0.0 forbids it (see CKDL_LENIENT), in the forms the soup
# can produce; and what the spec allows but ckdl rejects (see CKDL_STRICT).
_CKDL_LENIENT_RE = re.compile(
    r"(?:^|[;{\n])\s*;"  # ';' with no node before it
    r"|/-(?:\s|\\|/\*[^*]*\*/|//[^\n]*)*/-"  # '/-' then '/-'
    r"|/-(?:\s|\\|/\*[^*]*\*/|//[^\n]*)*(?:;|\}|$)"  # '/-' before nothing, in a slashdashed node
    r"|[}\"#]\{|\}/-|\}[ \t]*\{"  # children block glued to what precedes it, or two blocks
    r"|[=)]\s*\{|\)\s*\("  # property or type without a value, two types
    r"|\\(?!(?:[ \t]|/\*[^*]*\*/)*(?:\n|\r|//|$))"  # a backslash that is no line continuation
)
_CKDL_STRICT_RE = re.compile(r"\([^)]*\\|\)\s*\\|/-\s*\\")  # line continuations around types, after '/-'


@st.composite
def soup_documents(draw: st.DrawFn) -> str:
    atoms = draw(st.lists(st.sampled_from(GOOD_ATOMS * 3 + BAD_ATOMS), max_size=12))
    parts: list[str] = []
    for atom in atoms:
        parts.append(atom)
        separator = draw(st.sampled_from(SOUP_SEPARATORS))
        if separator == ";" and atom not in VALUE_LIKE:
            separator = " "  # a ';' after no node is a known ckdl leniency; keep it rare
        parts.append(separator)
    return "".join(parts)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(soup_documents())
def test_soup_locate_nodes_agrees_with_ckdl(text: str) -> None:
    try:
        expected = ckdl_names(text)
    except ckdl.ParseError:
        # Not required by the contract, but it should spot every error ckdl spots.
        if not _CKDL_STRICT_RE.search(text):
            with pytest.raises(KdlSyntaxError):
                locate_nodes(text)
        return
    if not _CKDL_LENIENT_RE.search(text):
        assert names(locate_nodes(text)) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(emitted_documents(), assembled_documents().map(lambda document: document[0])))
def test_what_ckdl_accepts_locate_nodes_accepts(text: str) -> None:
    try:
        expected = ckdl_names(text)
    except ckdl.ParseError:
        return
    assert names(locate_nodes(text)) == expected


# ---------------------------------------------------------------------------------------------
# Where ckdl 1.0 and the KDL 2.0.0 grammar disagree. locate_nodes follows the spec; these pin
# both sides so that a ckdl upgrade that changes its mind is noticed.

CKDL_LENIENT = [
    ("a;;b", "a ';' with no node before it"),
    ("a {;}", "a ';' with no node before it"),
    (";", "a ';' with no node before it"),
    ("a /-/-b", "'/-' followed by '/-'"),
    ("/-/-a\nb", "'/-' followed by '/-'"),
    ('a "\\u{}"', "\\u{} without digits"),
    ('a "\\u{0012345}"', "\\u{} with 7 digits"),
    ('a "\\u\\\n{41}"', "whitespace escape inside \\u{}"),
    ("a {}/-{}", "no space before a slashdashed children block"),
    ('a "x"{}', "no space between a string and a children block"),
    ("a /-{b}{c}", "no space between two children blocks"),
    ("/-a {b} {c}", "two children blocks in a slashdashed node"),
    ("a k={}", "property without a value"),
    ("a (t){}", "type annotation without a value"),
    ('a ("t")(t)1', "two type annotations"),
    ("a 1ee5", "repeated exponent marker"),
    ("a 1.0e-e1", "repeated exponent marker"),
    ("\\a", "'\\' not followed by a newline"),
    ("(t)\\ node", "'\\' not followed by a newline"),
    ("/- a /-", "dangling '/-' inside a slashdashed node"),
    ("/- a {/-}", "dangling '/-' inside a slashdashed node"),
]

CKDL_STRICT = [
    ("(t)\\\na", "line continuation between a type annotation and a node name"),
    ("(\\\nt)a", "line continuation inside a type annotation"),
    ("a 1 /-\\\n\n2 3", "line continuation and newline after a slashdash"),
]


@pytest.mark.parametrize(("text", "what"), CKDL_LENIENT, ids=[c[1] + " " + c[0] for c in CKDL_LENIENT])
def test_ckdl_accepts_but_spec_rejects(text: str, what: str) -> None:
    ckdl.parse(text, version=2)
    with pytest.raises(KdlSyntaxError):
        locate_nodes(text)


@pytest.mark.parametrize(("text", "what"), CKDL_STRICT, ids=[c[1] for c in CKDL_STRICT])
def test_spec_accepts_but_ckdl_rejects(text: str, what: str) -> None:
    with pytest.raises(ckdl.ParseError):
        ckdl.parse(text, version=2)
    assert locate_nodes(text)


def test_vertical_tab_is_a_newline() -> None:
    # KDL 2.0.0 lists VT (U+000B) among the newlines; ckdl 1.0 treats it as plain whitespace.
    text = "a\x0bb"
    assert positions(locate_nodes(text)) == [("a", 1, 1, []), ("b", 2, 1, [])]
    assert ckdl_names(text) == [("a", [])]


# ---------------------------------------------------------------------------------------------
# Speed: linear, and a real config in a few milliseconds


def test_large_document_is_fast() -> None:
    block = (
        "// route {i}\n"
        'route "api-{i}" priority=10 {{\n'
        '    matches {{ path-prefix "/api/{i}/" /* inline */ method "GET" "POST"; header x=#"t-{i}"# }}\n'
        "    /-disabled #true\n"
        '    upstream "backend-{i}" timeout=(ms)1_500 weight=0.5e1\n'
        '    policy """\n        allow all\n        """\n'
        "}}\n"
    )
    text = "".join(block.format(i=i) for i in range(300))
    assert text.count("\n") >= 2000
    started = time.perf_counter()
    found = locate_nodes(text)
    elapsed = time.perf_counter() - started
    assert len(found) == 300
    assert found[-1].line == 299 * 9 + 2
    assert elapsed < 0.5  # about 10 ms on a CI machine; the bound only catches a blow-up


@pytest.mark.parametrize(
    "text",
    ['a "' + "x" * 200_000, 'a """\n' + "x\\\n" * 50_000, "/*" * 50_000, "a #" + '"' * 100_000, "a " + "/- " * 50_000],
    ids=["unclosed string", "unclosed multi-line string", "unclosed comments", "quotes", "slashdashes"],
)
def test_pathological_input_fails_fast(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(KdlSyntaxError):
        locate_nodes(text)
    assert time.perf_counter() - started < 1.0
