"""A subset of Go's text/template, enough for Istio's bootstrap template.

Supported: text and {{ actions }} with trim markers ({{- and -}}), comments {{/* */}},
{{if}}/{{else if}}/{{else}}/{{end}}, {{with}}, {{range}} (with `$i, $v :=` / `$v :=`),
variables ($ and declared), field chains (.a.B.c on dicts and objects), literals (strings,
raw strings, numbers, true/false/nil), pipelines with `|`, parenthesised sub-pipelines, and the
functions and, or, not, eq, ne, lt, le, gt, ge, len, index, print, printf (%s %d %v %q %t),
js, html-less urlquery-less, plus the bootstrap's toJSON (Istio) and sprig's toJson, list,
contains, default, empty, quote.

Values are printed as Go's fmt %v would: missing map keys print "<no value>", booleans
true/false, lists "[a b]", maps "map[k:v]" with sorted keys. Truthiness is Go's: false, 0,
nil, and empty strings/lists/maps are false.
"""
import json
import math
import re

__all__ = ["Template", "TemplateError", "NO_VALUE"]


class TemplateError(Exception):
    pass


class _NoValue:
    """A missing map key (Go: the zero reflect.Value, printed as <no value>)."""

    def __repr__(self):
        return "<no value>"

    def __bool__(self):
        return False


NO_VALUE = _NoValue()


# ---- lexing -----------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


def _split(text):
    """[("text", s) | ("action", body)], with trim markers applied to the neighbouring text."""
    out = []
    pos = 0
    trim_next = False
    while True:
        m = _ACTION.search(text, pos)
        if not m:
            t = text[pos:]
            if trim_next:
                t = t.lstrip(" \t\r\n")
            out.append(("text", t))
            break
        t = text[pos:m.start()]
        if trim_next:
            t = t.lstrip(" \t\r\n")
        if m.group(1):
            t = t.rstrip(" \t\r\n")
        out.append(("text", t))
        out.append(("action", m.group(2).strip()))
        trim_next = bool(m.group(3))
        pos = m.end()
    return out


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)+')
  | (?P<decl>:=|=)
  | (?P<pipe>\|)
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<comma>,)
  | (?P<num>[+-]?(?:0[xX][0-9a-fA-F]+|\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?))
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""", re.X)


def _tokens(s):
    out = []
    pos = 0
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            raise TemplateError("bad character in action %r at %d" % (s, pos))
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        v = m.group(kind)
        # a field chain right after a variable or ')' : $x.a.b / (pipeline).a
        if kind == "field" and out and out[-1][0] in ("var", "rp") and v != "." and \
                s[m.start() - 1] not in " \t\r\n":
            out.append(("chain", v))
            continue
        out.append((kind, v))
    return out


# ---- parsing ----------------------------------------------------------------------------------
# Node kinds: ("text", s) ("out", pipe) ("if", [(pipe, body)...], else_body)
# ("range", decls, pipe, body, else_body) ("with", decls, pipe, body, else_body)
# pipe = (decls, [cmd, ...]); cmd = [arg, ...]; arg = ("field", [names]) | ("var", name, [names])
# | ("lit", value) | ("ident", name) | ("sub", pipe, [names])


class _Parser:
    def __init__(self, items):
        self.items = items
        self.i = 0

    def parse(self):
        body, end = self.block(())
        if end is not None:
            raise TemplateError("unexpected {{%s}}" % end)
        return body

    def block(self, stops):
        """Nodes until an action whose keyword is in <stops>; returns (nodes, that action)."""
        nodes = []
        while self.i < len(self.items):
            kind, v = self.items[self.i]
            self.i += 1
            if kind == "text":
                if v:
                    nodes.append(("text", v))
                continue
            if v.startswith("/*"):
                continue
            word = v.split(None, 1)[0] if v else ""
            rest = v[len(word):].strip()
            if word in ("end", "else"):
                if word not in stops and not (word == "else" and "else" in stops):
                    raise TemplateError("unexpected {{%s}}" % v)
                return nodes, v
            if word == "if":
                nodes.append(self.parse_if(rest))
            elif word in ("range", "with"):
                decls, pipe = self.parse_pipe(rest, allow_decl=True)
                body, end = self.block(("end", "else"))
                other = []
                if end.startswith("else"):
                    if end.strip() != "else":
                        raise TemplateError("unsupported {{%s}} in %s" % (end, word))
                    other, end = self.block(("end",))
                nodes.append((word, decls, pipe, body, other))
            elif word in ("define", "template", "block", "break", "continue"):
                raise TemplateError("unsupported action {{%s}}" % v)
            else:
                decls, pipe = self.parse_pipe(v, allow_decl=True)
                nodes.append(("out", decls, pipe))
        if stops:
            raise TemplateError("missing {{end}}")
        return nodes, None

    def parse_if(self, cond):
        branches = []
        while True:
            _, pipe = self.parse_pipe(cond)
            body, end = self.block(("end", "else"))
            branches.append((pipe, body))
            if end == "end":
                return ("if", branches, [])
            rest = end[4:].strip()
            if rest.startswith("if "):
                cond = rest[3:].strip()
                continue
            if rest:
                raise TemplateError("bad {{%s}}" % end)
            other, end = self.block(("end",))
            return ("if", branches, other)

    def parse_pipe(self, s, allow_decl=False):
        toks = _tokens(s)
        decls = []
        if allow_decl:
            j = next((k for k, t in enumerate(toks) if t[0] == "decl"), None)
            if j is not None and all(t[0] in ("var", "comma") for t in toks[:j]):
                decls = [t[1] for t in toks[:j] if t[0] == "var"]
                toks = toks[j + 1:]
        pipe, k = self._pipeline(toks, 0)
        if k != len(toks):
            raise TemplateError("unexpected %r in %r" % (toks[k][1], s))
        return decls, pipe

    def _pipeline(self, toks, k):
        cmds = []
        cmd = []
        while k < len(toks):
            kind, v = toks[k]
            if kind == "rp":
                break
            k += 1
            if kind == "pipe":
                if not cmd:
                    raise TemplateError("empty command in pipeline")
                cmds.append(cmd)
                cmd = []
            elif kind == "lp":
                sub, k = self._pipeline(toks, k)
                if k >= len(toks) or toks[k][0] != "rp":
                    raise TemplateError("unclosed (")
                k += 1
                chain = []
                if k < len(toks) and toks[k][0] == "chain":
                    chain = toks[k][1].split(".")[1:]
                    k += 1
                cmd.append(("sub", sub, chain))
            elif kind == "field":
                cmd.append(("field", [] if v == "." else v.split(".")[1:]))
            elif kind == "var":
                chain = []
                if k < len(toks) and toks[k][0] == "chain":
                    chain = toks[k][1].split(".")[1:]
                    k += 1
                cmd.append(("var", v, chain))
            elif kind == "str":
                cmd.append(("lit", json.loads(v)))
            elif kind == "raw":
                cmd.append(("lit", v[1:-1]))
            elif kind == "char":
                cmd.append(("lit", ord(json.loads('"' + v[1:-1] + '"'))))
            elif kind == "num":
                cmd.append(("lit", _number(v)))
            elif kind == "ident":
                if v in ("true", "false"):
                    cmd.append(("lit", v == "true"))
                elif v == "nil":
                    cmd.append(("lit", None))
                else:
                    cmd.append(("ident", v))
            else:
                raise TemplateError("unexpected %r" % v)
        if cmd:
            cmds.append(cmd)
        if not cmds:
            raise TemplateError("missing value")
        return cmds, k


def _number(v):
    try:
        return int(v, 0)
    except ValueError:
        return float(v)


# ---- values -----------------------------------------------------------------------------------

def truth(v):
    if v is None or v is NO_VALUE or v is False:
        return False
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v != 0
    if isinstance(v, (str, bytes, list, tuple, dict, set)):
        return len(v) > 0
    return True


def _fmt_float(f):
    # Go's %v for float64: strconv.FormatFloat(f, 'g', -1, 64) with exponent when exp < -4 || >= 21
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if math.isnan(f):
        return "NaN"
    if f == int(f) and abs(f) < 1e21:
        return str(int(f))
    r = repr(f)
    if "e" in r:
        mant, exp = r.split("e")
        e = int(exp)
        return "%se%s%02d" % (mant, "-" if e < 0 else "+", abs(e))
    return r


def gostr(v):
    """fmt.Sprint(v)."""
    if v is NO_VALUE:
        return "<no value>"
    if v is None:
        return "<nil>"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        return _fmt_float(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(gostr(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join("%s:%s" % (gostr(k), gostr(v[k])) for k in sorted(v)) + "]"
    return str(v)


def _field(v, name):
    if v is None or v is NO_VALUE:
        raise TemplateError("nil pointer evaluating .%s" % name)
    if isinstance(v, dict):
        return v.get(name, NO_VALUE)
    if hasattr(v, name):
        return getattr(v, name)
    raise TemplateError("can't evaluate field %s in %r" % (name, type(v).__name__))


def go_json(v):
    """encoding/json.Marshal: compact, HTML-escaped (<, >, & as \\u003c...), integral floats as
    integers."""
    def conv(x):
        if isinstance(x, float) and x == int(x) and abs(x) < 1e21:
            return int(x)
        if isinstance(x, dict):
            return {k: conv(x[k]) for k in x}
        if isinstance(x, (list, tuple)):
            return [conv(y) for y in x]
        if x is NO_VALUE:
            return None
        if hasattr(x, "to_json"):
            return conv(x.to_json())
        return x
    s = json.dumps(conv(v), separators=(",", ":"), ensure_ascii=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def js_escape(s):
    """text/template's js function (template.JSEscapeString)."""
    out = []
    for ch in s:
        c = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch == '"':
            out.append('\\"')
        elif ch == "<":
            out.append("\\u003C")
        elif ch == ">":
            out.append("\\u003E")
        elif ch == "&":
            out.append("\\u0026")
        elif ch == "=":
            out.append("\\u003D")
        elif c < 0x20 or c == 0x7f or (0x80 <= c < 0xa0):
            out.append("\\u%04X" % c)
        else:
            out.append(ch)
    return "".join(out)


def _printf(fmt, *args):
    out = []
    ai = 0
    i = 0
    while i < len(fmt):
        ch = fmt[i]
        if ch != "%" or i + 1 >= len(fmt):
            out.append(ch)
            i += 1
            continue
        verb = fmt[i + 1]
        i += 2
        if verb == "%":
            out.append("%")
            continue
        a = args[ai] if ai < len(args) else NO_VALUE
        ai += 1
        if verb in "vs":
            out.append(gostr(a))
        elif verb == "d":
            out.append(str(int(a)))
        elif verb == "q":
            out.append(json.dumps(gostr(a)))
        elif verb == "t":
            out.append(gostr(bool(a)))
        else:
            raise TemplateError("printf verb %%%s not supported" % verb)
    return "".join(out)


def _eq(a, *bs):
    return any(a == b for b in bs)


def _index(v, *keys):
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k, NO_VALUE)
        else:
            v = v[k]
    return v


FUNCS = {
    "not": lambda a: not truth(a),
    "eq": _eq,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "len": lambda a: len(a),
    "index": _index,
    "print": lambda *a: "".join(gostr(x) for x in a),
    "printf": _printf,
    "js": lambda a: js_escape(gostr(a)),
    "toJSON": lambda a: "{}" if a is None or a is NO_VALUE else go_json(a),
    "toJson": lambda a: go_json(a),
    "list": lambda *a: list(a),
    "contains": lambda sub, s: sub in s,
    "default": lambda d, v=NO_VALUE: v if truth(v) else d,
    "empty": lambda v: not truth(v),
    "quote": lambda *a: " ".join(json.dumps(gostr(x)) for x in a),
}
_SHORT_CIRCUIT = ("and", "or")


class Template:
    def __init__(self, text, funcs=None):
        self.tree = _Parser(_split(text)).parse()
        self.funcs = dict(FUNCS)
        if funcs:
            self.funcs.update(funcs)

    def execute(self, data):
        out = []
        self._run(self.tree, data, [("$", data)], out)
        return "".join(out)

    # ---- evaluation ---------------------------------------------------------------------------

    def _run(self, nodes, dot, vars_, out):
        for n in nodes:
            kind = n[0]
            if kind == "text":
                out.append(n[1])
            elif kind == "out":
                v = self._pipe(n[2], dot, vars_)
                if n[1]:
                    vars_.append((n[1][0], v))
                else:
                    out.append(gostr(v))
            elif kind == "if":
                for pipe, body in n[1]:
                    if truth(self._pipe(pipe, dot, vars_)):
                        self._run(body, dot, list(vars_), out)
                        break
                else:
                    self._run(n[2], dot, list(vars_), out)
            elif kind == "with":
                v = self._pipe(n[2], dot, vars_)
                if truth(v):
                    vs = list(vars_)
                    if n[1]:
                        vs.append((n[1][0], v))
                    self._run(n[3], v, vs, out)
                else:
                    self._run(n[4], dot, list(vars_), out)
            elif kind == "range":
                v = self._pipe(n[2], dot, vars_)
                if isinstance(v, dict):
                    items = [(k, v[k]) for k in sorted(v)]
                elif isinstance(v, int) and not isinstance(v, bool):
                    items = list(enumerate(range(v)))
                elif v is None or v is NO_VALUE:
                    items = []
                else:
                    items = list(enumerate(v))
                if not items:
                    self._run(n[4], dot, list(vars_), out)
                for k, x in items:
                    vs = list(vars_)
                    if len(n[1]) == 1:
                        vs.append((n[1][0], x))
                    elif len(n[1]) == 2:
                        vs.append((n[1][0], k))
                        vs.append((n[1][1], x))
                    self._run(n[3], x, vs, out)

    def _var(self, name, vars_):
        for k, v in reversed(vars_):
            if k == name:
                return v
        raise TemplateError("undefined variable %s" % name)

    def _pipe(self, cmds, dot, vars_):
        v = NO_VALUE
        first = True
        for cmd in cmds:
            v = self._cmd(cmd, dot, vars_, None if first else v, not first)
            first = False
        return v

    def _arg(self, a, dot, vars_):
        kind = a[0]
        if kind == "lit":
            return a[1]
        if kind == "field":
            v = dot
            for name in a[1]:
                v = _field(v, name)
            return v
        if kind == "var":
            v = self._var(a[1], vars_)
            for name in a[2]:
                v = _field(v, name)
            return v
        if kind == "sub":
            v = self._pipe(a[1], dot, vars_)
            for name in a[2]:
                v = _field(v, name)
            return v
        if kind == "ident":
            return self._call(a[1], [], dot, vars_)
        raise TemplateError("bad argument %r" % (a,))

    def _call(self, name, args, dot, vars_, extra=()):
        if name in _SHORT_CIRCUIT:
            vals = list(args) + [("lit", x) for x in extra]
            if not vals:
                raise TemplateError("%s: no arguments" % name)
            v = None
            for a in vals:
                v = self._arg(a, dot, vars_)
                if (name == "and") != truth(v):
                    return v
            return v
        fn = self.funcs.get(name)
        if fn is None:
            raise TemplateError('function "%s" not defined' % name)
        return fn(*([self._arg(a, dot, vars_) for a in args] + list(extra)))

    def _cmd(self, cmd, dot, vars_, prev, piped):
        head = cmd[0]
        extra = (prev,) if piped else ()
        if head[0] == "ident":
            return self._call(head[1], cmd[1:], dot, vars_, extra)
        if len(cmd) > 1 or piped:
            raise TemplateError("can't give arguments to a non-function %r" % (head,))
        return self._arg(head, dot, vars_)
