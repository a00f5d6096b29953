"""Line and column of every node of a KDL v2 document.

ckdl is the validator of record for KDL syntax but reports no positions, not even for syntax errors.
This is a small hand-written scanner for the KDL 2.0.0 grammar (https://kdl.dev/spec) that finds
where each node's name starts, keeps the node tree (minus slashdashed parts, as a parser drops them),
and, on invalid text, says at which line and column the text stops being KDL.

It reads values only as far as needed to stay in step with the grammar: numbers and strings are
checked, and names are decoded (escapes, raw strings, multi-line dedent), but no value is returned.

Positions are 1-based. Columns count code points; a byte order mark at the very start is not
counted. Lines are split at the newlines KDL defines (CRLF, CR, LF, NEL, VT, FF, LS, PS).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

__all__ = ["KdlSyntaxError", "SourceNode", "locate_nodes"]


@dataclass(slots=True)
class SourceNode:
    """A node name with the position of its first character, and the node's children."""

    name: str
    line: int
    column: int
    children: list[SourceNode]


class KdlSyntaxError(Exception):
    """The text is not valid KDL v2; `line` and `column` point at the first offending character."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.line = line
        self.column = column
        self.message = message

    def __reduce__(self) -> tuple[type[KdlSyntaxError], tuple[int, int, str]]:
        # The default would call __init__ with the formatted text only.
        return (type(self), (self.line, self.column, self.message))


# Character classes of the spec, as regex class bodies.
_WS = "\t \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"  # unicode-space
_NL = "\n\r\x0b\x0c\x85\u2028\u2029"  # newline (CRLF is handled as one newline where it matters)
_DISALLOWED = "\x00-\x08\x0e-\x1f\x7f\ud800-\udfff\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff"

_NL_CHARS = frozenset("\n\r\x0b\x0c\x85\u2028\u2029")
_WSNL_CHARS = _NL_CHARS | frozenset("\t \u00a0\u1680\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B))))
_NUMBER_FIRST = frozenset("0123456789+-.")

_NEWLINE_RE = re.compile(rf"\r\n|[{_NL}]")
_WS_RE = re.compile(rf"[{_WS}]*")
# Whitespace, newlines and // comments between nodes in one go; /* */ and \ need code (nesting, checks).
_LINE_SPACE_RE = re.compile(rf"(?:[{_WS}]+|\r\n|[{_NL}]|//[^{_NL}]*)*+")
_LINE_COMMENT_RE = re.compile(rf"//[^{_NL}]*(?:\r\n|[{_NL}])?")
_BLOCK_COMMENT_TOKEN_RE = re.compile(r"/\*|\*/")
_DISALLOWED_RE = re.compile(f"[{_DISALLOWED}]")
_IDENT_RE = re.compile(rf"[^{_WS}{_NL}\\/(){{}};\[\]\"#={_DISALLOWED}]+")
_NUMBER_RE = re.compile(
    r"[+-]?(?:0x[0-9a-fA-F][0-9a-fA-F_]*|0o[0-7][0-7_]*|0b[01][01_]*"
    r"|[0-9][0-9_]*(?:\.[0-9][0-9_]*)?(?:[eE][+-]?[0-9][0-9_]*)?)"
)
# Where the grammar reads a number, so that a bare word there is an error, not an identifier.
_NUMERIC_START_RE = re.compile(r"[+-]?\.?[0-9]")
_KEYWORD_RE = re.compile(r"#(?:true|false|null|inf|-inf|nan)")
_HASHES_RE = re.compile(r"#+")
# Possessive repeats: an unclosed string must fail in linear time, not backtrack.
_QUOTED_RE = re.compile(rf'"(?:[^"\\{_NL}]++|\\[{_WS}{_NL}]++|\\[^{_WS}{_NL}])*+"')
_ML_QUOTED_BODY_RE = re.compile(rf'(?:[^"\\]++|\\[{_WS}{_NL}]++|\\[^{_WS}{_NL}]|"(?!""))*+"""')
_ML_TOKEN_RE = re.compile(rf"\\[{_WS}{_NL}]+|\\[^{_WS}{_NL}]|\r\n|[{_NL}]|[^\\{_NL}]+")
_ESCAPE_RE = re.compile(rf"\\(?:u\{{([0-9a-fA-F]{{1,6}})\}}|([{_WS}{_NL}]+)|(.))", re.DOTALL)

_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "b": "\b", "f": "\f", "s": " "}
# Bare words that would be confusable with v1 keywords or float keywords: a syntax error in v2.
_RESERVED_WORDS = frozenset({"true", "false", "null", "inf", "-inf", "nan"})
# Deeper nesting than this is no real config, and recursion would end in a RecursionError.
_MAX_DEPTH = 100


class _ScanError(Exception):
    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


def _unescape(match: re.Match[str]) -> str:
    hex_digits, whitespace, char = match.groups()
    if hex_digits is not None:
        return chr(int(hex_digits, 16))
    if whitespace is not None:
        return ""
    return _SIMPLE_ESCAPES[char]


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.pos = 0
        self.depth = 0
        self.line_starts = [0, *(m.end() for m in _NEWLINE_RE.finditer(text))]

    # -- positions and errors -------------------------------------------------------------------

    def line_col(self, offset: int) -> tuple[int, int]:
        line = bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1

    def describe(self, offset: int) -> str:
        if offset >= self.n:
            return "end of document"
        char = self.text[offset]
        if char in _NL_CHARS:
            return "end of line"
        return repr(char)

    def unexpected(self, offset: int, expected: str) -> _ScanError:
        if offset < self.n and self.text[offset] in "[]":
            return _ScanError(
                offset,
                f"unexpected {self.text[offset]!r}: KDL has no [ ] arrays, write the values one after another, "
                'e.g. agents "auth" "ratelimit"',
            )
        return _ScanError(offset, f"expected {expected}, found {self.describe(offset)}")

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < self.n else ""

    # -- whitespace and comments ----------------------------------------------------------------

    def skip_node_space(self) -> bool:
        """Skip `node-space*` (whitespace, /* */ comments, line continuations); True if any."""
        text = self.text
        start = pos = self.pos
        while True:
            pos = _WS_RE.match(text, pos).end()  # type: ignore[union-attr]  # `*` always matches
            char = text[pos : pos + 1]
            if char == "/" and text.startswith("/*", pos):
                self.pos = pos
                self.skip_block_comment()
            elif char == "\\":
                self.pos = pos
                self.skip_escline()
            else:
                self.pos = pos
                return pos != start
            pos = self.pos

    def skip_line_space(self) -> None:
        """Skip `line-space*`: node-space plus newlines and // comments."""
        text = self.text
        while True:
            self.pos = _LINE_SPACE_RE.match(text, self.pos).end()  # type: ignore[union-attr]
            if text.startswith("/*", self.pos):
                self.skip_block_comment()
            elif text.startswith("\\", self.pos):
                self.skip_escline()
            else:
                return

    def skip_block_comment(self) -> None:
        depth = 0
        for match in _BLOCK_COMMENT_TOKEN_RE.finditer(self.text, self.pos):
            depth += 1 if match.group() == "/*" else -1
            if depth == 0:
                self.pos = match.end()
                return
        raise _ScanError(self.pos, "unclosed '/*' comment")

    def skip_escline(self) -> None:
        """A `\\` line continuation: only whitespace and comments may follow it on its line."""
        start = self.pos
        self.pos += 1
        while True:
            self.pos = _WS_RE.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if not self.text.startswith("/*", self.pos):
                break
            self.skip_block_comment()
        if self.pos >= self.n:
            return
        if self.text.startswith("//", self.pos):
            self.pos = _LINE_COMMENT_RE.match(self.text, self.pos).end()  # type: ignore[union-attr]
            return
        if self.text[self.pos] in _NL_CHARS:
            self.pos += 2 if self.text.startswith("\r\n", self.pos) else 1
            return
        raise _ScanError(start, "a '\\' outside a string must end its line (line continuation)")

    # -- document structure -----------------------------------------------------------------

    def nodes(self, open_brace: int | None) -> list[SourceNode]:
        """`nodes`, up to the end of the document or (in a children block) to its `}`."""
        found: list[SourceNode] = []
        text = self.text
        while True:
            self.skip_line_space()
            if self.pos >= self.n:
                if open_brace is not None:
                    raise _ScanError(open_brace, "this '{' is never closed")
                return found
            char = text[self.pos]
            if char == "}":
                if open_brace is not None:
                    return found
                raise _ScanError(self.pos, "unexpected '}' without a matching '{'")
            if char == ";":
                raise _ScanError(self.pos, "unexpected ';' with no node before it")
            node = self.node()
            if node is not None:
                found.append(node)
            # The node stopped at a terminator (or raised): `;` is consumed here, newlines and
            # `//` comments by the next skip_line_space, `}` by the caller.
            if self.pos < self.n and text[self.pos] == ";":
                self.pos += 1

    def node(self) -> SourceNode | None:
        """`base-node`; None when the node is slashdashed."""
        text = self.text
        slashdash = self.pos if text.startswith("/-", self.pos) else None
        if slashdash is not None:
            self.pos += 2
            self.skip_line_space()
            if self.pos >= self.n or text[self.pos] in ";}":
                raise _ScanError(slashdash, "'/-' must be followed by a node")
            if text.startswith("/-", self.pos):
                raise _ScanError(self.pos, "'/-' cannot comment out another '/-'")
        if self.peek() == "(":
            self.type_annotation()
            self.skip_node_space()
        name_at = self.pos
        name = self.string_or_fail("node name", "a node name")
        children = self.node_rest()
        if slashdash is not None:
            return None
        line, column = self.line_col(name_at)
        return SourceNode(name, line, column, children)

    def node_rest(self) -> list[SourceNode]:
        """Entries and children blocks after a node name, up to (not including) its terminator."""
        text = self.text
        children: list[SourceNode] = []
        # The grammar orders them: entries, then /-{...} blocks, one {...} block, then more /-{...}.
        stage = 0  # 0: entries allowed; 1: after a /-{...}; 2: after the {...}
        while True:
            spaced = self.skip_node_space()
            if self.pos >= self.n:
                return children
            char = text[self.pos]
            if char in ";}" or char in _NL_CHARS or text.startswith("//", self.pos):
                return children
            if not spaced:
                if stage == 2:
                    raise self.unexpected(self.pos, "';' or a newline after the children block")
                raise self.unexpected(self.pos, "whitespace, ';' or a newline")
            if text.startswith("/-", self.pos):
                slashdash = self.pos
                self.pos += 2
                self.skip_line_space()
                if self.pos >= self.n or text[self.pos] in ";}":
                    raise _ScanError(slashdash, "'/-' must be followed by an argument, property or children block")
                if text.startswith("/-", self.pos):
                    raise _ScanError(self.pos, "'/-' cannot comment out another '/-'")
                if text[self.pos] == "{":
                    self.children_block()
                    stage = max(stage, 1)
                elif stage:
                    raise _ScanError(self.pos, "arguments and properties must come before children blocks")
                else:
                    self.entry()
            elif char == "{":
                if stage == 2:
                    raise _ScanError(self.pos, "a node can have only one children block")
                children = self.children_block()
                stage = 2
            elif stage == 2:
                raise self.unexpected(self.pos, "';' or a newline after the children block")
            elif stage == 1:
                raise _ScanError(self.pos, "arguments and properties must come before children blocks")
            else:
                self.entry()

    def children_block(self) -> list[SourceNode]:
        open_brace = self.pos
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _ScanError(open_brace, f"children blocks nested more than {_MAX_DEPTH} deep")
        self.pos += 1
        children = self.nodes(open_brace)
        self.pos += 1  # the `}` that nodes() stopped at
        self.depth -= 1
        return children

    def type_annotation(self) -> None:
        self.pos += 1
        self.skip_node_space()
        if self.peek() == ")":
            raise _ScanError(self.pos, "empty type annotation")
        self.string_or_fail("type annotation", "a type name")
        self.skip_node_space()
        if self.peek() != ")":
            raise self.unexpected(self.pos, "')' to close the type annotation")
        self.pos += 1

    # -- entries ----------------------------------------------------------------------------

    def entry(self) -> None:
        """An argument (`value`) or a property (`string = value`)."""
        text = self.text
        start = self.pos
        typed = text.startswith("(", start)
        if typed:
            self.type_annotation()
            self.skip_node_space()
        value_at = self.pos
        if self.scalar():
            ahead = _WS_RE.match(text, self.pos).end()  # type: ignore[union-attr]
            if text.startswith("=", ahead):
                raise _ScanError(value_at, "a property name must be a string (quote it)")
            return
        if self.string() is None:
            raise self.unexpected(self.pos, "a value after the type annotation" if typed else "a value")
        after_string = self.pos
        # A string is a property name if `=` follows, possibly after node-space; look ahead cheaply
        # first, since almost always the next thing is plain whitespace and then not `=`.
        ahead = _WS_RE.match(text, after_string).end()  # type: ignore[union-attr]
        char = text[ahead : ahead + 1]
        if char in ("/", "\\"):
            self.skip_node_space()
            char = text[self.pos : self.pos + 1]
        else:
            self.pos = ahead
        if char != "=":
            self.pos = after_string  # an argument; the space belongs to the caller
            return
        if typed:
            raise _ScanError(start, "a property name cannot have a type annotation")
        self.pos += 1
        self.skip_node_space()
        if text.startswith("(", self.pos):
            self.type_annotation()
            self.skip_node_space()
        if not self.scalar() and self.string() is None:
            raise self.unexpected(self.pos, "a value after '='")

    def numeric_ahead(self) -> bool:
        """Would the grammar read a number here (so that it can't be an identifier)?"""
        return _NUMERIC_START_RE.match(self.text, self.pos) is not None

    def scalar(self) -> bool:
        """A number or a #keyword at the current position; False (nothing read) if neither."""
        text = self.text
        start = self.pos
        char = text[start : start + 1]
        if char == "#":
            if text[start + 1 : start + 2] in ('"', "#"):
                return False  # a raw string
            match = _KEYWORD_RE.match(text, start)
            if match is None or _IDENT_RE.match(text, match.end()):
                word = _IDENT_RE.match(text, start + 1)
                shown = "#" + (word.group() if word else "")
                raise _ScanError(start, f"unknown keyword {shown!r} (valid: #true #false #null #inf #-inf #nan)")
            self.pos = match.end()
            return True
        if char not in _NUMBER_FIRST or not self.numeric_ahead():
            return False
        match = _NUMBER_RE.match(text, start)
        if match is None or _IDENT_RE.match(text, match.end()):
            word = _IDENT_RE.match(text, start)
            shown = word.group() if word else char
            raise _ScanError(start, f"invalid number {shown!r} (a bare word can't start like a number; quote it)")
        self.pos = match.end()
        return True

    # -- strings ----------------------------------------------------------------------------

    def string_or_fail(self, what: str, expected: str) -> str:
        if self.numeric_ahead():
            raise _ScanError(self.pos, f"a {what} cannot be a number; quote it")
        if self.peek() == "#" and self.peek(1) not in ('"', "#"):
            raise _ScanError(self.pos, f"a {what} cannot be a #keyword; quote it")
        value = self.string()
        if value is None:
            raise self.unexpected(self.pos, expected)
        return value

    def string(self) -> str | None:
        """A string (identifier, quoted, raw, multi-line) at the current position, decoded.

        None if no string starts here; raises if one starts but is malformed. The caller has
        already ruled out numbers and keywords.
        """
        start = self.pos
        char = self.peek()
        if char == '"':
            return self.quoted_string()
        if char == "#":
            return self.raw_string() if self.peek(1) in ('"', "#") else None
        match = _IDENT_RE.match(self.text, start)
        if match is None:
            return None
        word = match.group()
        if word in _RESERVED_WORDS:
            raise _ScanError(start, f'bare {word!r} is not allowed in KDL v2: write #{word}, or "{word}" for the text')
        self.pos = match.end()
        return word

    def quoted_string(self) -> str:
        text = self.text
        start = self.pos
        if text.startswith('"""', start):
            body_start = start + 3
            if body_start >= self.n or text[body_start] not in _NL_CHARS:
                raise _ScanError(start, 'a """ multi-line string must start with a newline after the opening """')
            match = _ML_QUOTED_BODY_RE.match(text, body_start)
            if match is None:
                raise _ScanError(start, 'unclosed multi-line string: no closing """')
            body_end = match.end() - 3
            if text.find("\\", body_start, body_end) >= 0:
                self.check_escapes(body_start, body_end)
            self.pos = match.end()
            return self.dedent(body_start, body_end, raw=False)
        match = _QUOTED_RE.match(text, start)
        if match is None:
            raise _ScanError(start, "unclosed string: no closing '\"' on this line")
        self.pos = match.end()
        body_start, body_end = start + 1, match.end() - 1
        body = text[body_start:body_end]
        if "\\" in body:
            self.check_escapes(body_start, body_end)
            body = _ESCAPE_RE.sub(_unescape, body)
        return body

    def raw_string(self) -> str:
        text = self.text
        start = self.pos
        hashes = _HASHES_RE.match(text, start).group()  # type: ignore[union-attr]  # starts with '#'
        quote = start + len(hashes)
        if text.startswith('"""', quote):
            body_start = quote + 3
            if body_start >= self.n or text[body_start] not in _NL_CHARS:
                raise _ScanError(start, 'a """ multi-line string must start with a newline after the opening """')
            # Raw strings end at the first closing delimiter, whatever follows it.
            body_end = text.find('"""' + hashes, body_start)
            if body_end < 0:
                raise _ScanError(start, f'unclosed raw multi-line string: no closing """{hashes}')
            self.pos = body_end + 3 + len(hashes)
            return self.dedent(body_start, body_end, raw=True)
        if text.startswith('"', quote):
            body_end = text.find('"' + hashes, quote + 1)
            if body_end < 0 or _NEWLINE_RE.search(text, quote + 1, body_end):
                raise _ScanError(start, f"unclosed raw string: no closing '\"{hashes}' on this line")
            self.pos = body_end + 1 + len(hashes)
            return text[quote + 1 : body_end]
        raise self.unexpected(quote, "'\"' to start a raw string")

    def check_escapes(self, start: int, end: int) -> None:
        for match in _ESCAPE_RE.finditer(self.text, start, end):
            hex_digits, _, char = match.groups()
            if hex_digits is not None:
                code = int(hex_digits, 16)
                if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                    raise _ScanError(match.start(), f"\\u{{{hex_digits}}} is not a Unicode scalar value")
            elif char is not None and char not in _SIMPLE_ESCAPES:
                if char == "u":
                    raise _ScanError(
                        match.start(),
                        "invalid escape: \\u needs 1 to 6 hex digits in braces, e.g. \\u{1F600}",
                    )
                raise _ScanError(match.start(), f"invalid escape '\\{char}'")

    def dedent(self, body_start: int, body_end: int, *, raw: bool) -> str:
        """The value of a multi-line string whose body (from its first newline) is text[body_start:body_end].

        Whitespace escapes are resolved before dedenting and other escapes after, as the spec says.
        """
        text = self.text
        lines: list[str] = []
        line_starts = [body_start]  # document offset of each line, for errors
        if raw:
            previous = body_start
            for match in _NEWLINE_RE.finditer(text, body_start, body_end):
                lines.append(text[previous : match.start()])
                previous = match.end()
                line_starts.append(previous)
            lines.append(text[previous:body_end])
        else:
            current: list[str] = []
            for match in _ML_TOKEN_RE.finditer(text, body_start, body_end):
                token = match.group()
                if token[0] == "\\":
                    if token[1] not in _WSNL_CHARS:  # a whitespace escape vanishes, even across lines
                        current.append(token)
                elif token[0] in _NL_CHARS:
                    lines.append("".join(current))
                    current = []
                    line_starts.append(match.end())
                else:
                    current.append(token)
            lines.append("".join(current))
        prefix = lines[-1]
        if not _WS_RE.fullmatch(prefix):
            raise _ScanError(body_end, 'the closing """ of a multi-line string must be on its own line')
        dedented: list[str] = []
        for index in range(1, len(lines) - 1):
            line = lines[index]
            if _WS_RE.fullmatch(line):
                dedented.append("")
            elif line.startswith(prefix):
                dedented.append(line[len(prefix) :])
            else:
                raise _ScanError(
                    line_starts[index],
                    'multi-line string line must start with the same whitespace as the closing """ line',
                )
        value = "\n".join(dedented)
        if not raw and "\\" in value:
            value = _ESCAPE_RE.sub(_unescape, value)
        return value


def _disallowed_message(char: str) -> str:
    if char == "\ufeff":
        return "a byte order mark (U+FEFF) is only allowed at the very start of the document"
    return f"character U+{ord(char):04X} is not allowed in a KDL document (write it as a \\u{{...}} escape)"


def locate_nodes(text: str) -> list[SourceNode]:
    """Top-level nodes of a KDL v2 document, with positions. Nodes removed by slashdash (/-) are omitted,
    exactly as a KDL parser omits them. Raises KdlSyntaxError at the first place the text is not valid KDL v2.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    scanner = _Scanner(text)
    # Disallowed code points are banned everywhere, comments included: one search up front, reported
    # unless the scanner fails earlier in the text.
    banned = _DISALLOWED_RE.search(text)
    try:
        nodes = scanner.nodes(None)
    except _ScanError as exc:
        error: _ScanError | None = exc
    else:
        error = None
    if banned is not None and (error is None or banned.start() <= error.offset):
        error = _ScanError(banned.start(), _disallowed_message(banned.group()))
    if error is not None:
        line, column = scanner.line_col(error.offset)
        raise KdlSyntaxError(line, column, error.message)
    return nodes
