"""A small jaxpr -> ONNX converter for the exported acting policy (``rfs export``).

Why a converter of our own and not jax2onnx: every jax2onnx release on PyPI at the time of
writing (0.15-0.17) pins ``orbax-checkpoint<0.11.37``, below the trainer's, and it lowers
``jax.random`` bits to ONNX ``RandomUniform``, so a sampled policy could not give the same action
as JAX for the same key. The acting policy needs few primitives (dense layers, LayerNorm, SiLU,
tanh, clipping, the Euler loop unrolled, and threefry for sampling), so this module converts its
jaxpr directly with ``onnx.helper``, needing only ``onnx`` (and ``onnxruntime`` to check).

What it does:
- traces ``fn`` with ``jax.make_jaxpr`` on the given input specs; a symbolic batch dimension
  (``jax.export.symbolic_shape``) becomes a dynamic ONNX dimension, read at run time from the
  input that has it;
- folds everything that depends only on constants (the params, literals) in JAX and stores it
  as ONNX initializers, so the params are baked into the file;
- inlines ``jit`` / ``custom_jvp_call`` / ``custom_vjp_call`` sub-jaxprs;
- implements ``random_split`` and ``random_bits`` of threefry keys (``jax_threefry_partitionable``,
  JAX's default) bit for bit with uint32 ONNX ops, so the ONNX model takes the same ``uint32[2]``
  key data as ``jax.random.PRNGKey`` and draws the same numbers; ``erf_inv`` uses the same
  polynomial as XLA.

A primitive it does not know raises ``NotImplementedError`` naming it. Opset 18 (``BitwiseXor``
and friends).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

OPSET = 18

# XLA's single-precision erf_inv (Giles' approximation), as chlo.erf_inv decomposes it.
_ERFINV_W_LT_5 = (
    2.81022636e-08,
    3.43273939e-07,
    -3.5233877e-06,
    -4.39150654e-06,
    0.00021858087,
    -0.00125372503,
    -0.00417768164,
    0.246640727,
    1.50140941,
)
_ERFINV_W_GE_5 = (
    -0.000200214257,
    0.000100950558,
    0.00134934322,
    -0.00367342844,
    0.00573950773,
    -0.0076224613,
    0.00943887047,
    1.00167406,
    2.83297682,
)
_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _is_static(dim) -> bool:
    try:
        operator.index(dim)
    except TypeError:
        return False
    return True


def _static_shape(shape) -> bool:
    return all(_is_static(d) for d in shape)


def _is_key(dtype) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


class _Converter:
    def __init__(self, opset: int):
        from onnx import TensorProto

        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self._names: set[str] = set()
        self._dims: dict[Any, tuple[str, int]] = {}  # symbolic dim -> (input name, axis)
        self._dim_tensors: dict[Any, str] = {}
        self._consts: dict[tuple, str] = {}
        self.T = TensorProto

    # ---- names, constants, nodes ---------------------------------------------------------------
    def fresh(self, hint: str = "t") -> str:
        i = len(self._names)
        name = f"{hint}_{i}"
        while name in self._names:
            i += 1
            name = f"{hint}_{i}"
        self._names.add(name)
        return name

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs) -> list[str]:
        from onnx import helper

        outs = [self.fresh(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, **attrs))
        return outs

    def op(self, op: str, *inputs: str, **attrs) -> str:
        return self.node(op, inputs, 1, **attrs)[0]

    def const(self, value, dtype=None) -> str:
        from onnx import numpy_helper

        arr = np.asarray(value, dtype=dtype)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 64 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.fresh("const")
        self.initializers.append(numpy_helper.from_array(arr, name))
        if key is not None:
            self._consts[key] = name
        return name

    def onnx_type(self, dtype) -> int:
        from onnx import helper

        return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    # ---- shapes ----------------------------------------------------------------------------------
    def add_input(self, name: str, spec) -> None:
        for axis, d in enumerate(spec.shape):
            if not _is_static(d) and d not in self._dims:
                self._dims[d] = (name, axis)
        self._names.add(name)

    def dim(self, d) -> str:
        """int64[1] tensor of one dimension (static or a symbolic input dimension)."""
        if _is_static(d):
            return self.const(np.array([int(d)], np.int64))
        if d not in self._dim_tensors:
            if d not in self._dims:
                raise NotImplementedError(
                    f"symbolic dimension {d} is not a dimension of an input; only input "
                    f"dimensions themselves (e.g. the batch) are supported"
                )
            src, axis = self._dims[d]
            self._dim_tensors[d] = self.op("Shape", src, start=axis, end=axis + 1)
        return self._dim_tensors[d]

    def shape(self, shape) -> str:
        """int64[len(shape)] tensor of a shape with static and symbolic dimensions."""
        if _static_shape(shape):
            return self.const(np.array([int(d) for d in shape], np.int64))
        pieces, static = [], []
        for d in shape:
            if _is_static(d):
                static.append(int(d))
                continue
            if static:
                pieces.append(self.const(np.array(static, np.int64)))
                static = []
            pieces.append(self.dim(d))
        if static:
            pieces.append(self.const(np.array(static, np.int64)))
        return pieces[0] if len(pieces) == 1 else self.op("Concat", *pieces, axis=0)


def _dims_equal(a, b) -> bool:
    if len(a) != len(b):
        return False
    return all(x == y for x, y in zip(a, b, strict=True))


# ---- the jaxpr interpreter --------------------------------------------------------------------
def _literal_value(var):
    from jax.extend.core import Literal

    return var.val if isinstance(var, Literal) else None


def _sub_jaxpr(eqn):
    from jax.extend.core import ClosedJaxpr, Jaxpr

    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(name)
        if isinstance(j, ClosedJaxpr):
            return j.jaxpr, list(j.consts)
        if isinstance(j, Jaxpr):
            return j, []
    return None


_INLINE = {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call"}
_INLINE |= {"remat", "checkpoint", "custom_lin"}
_IDENTITY = {"stop_gradient", "copy", "copy_p", "optimization_barrier", "random_wrap"}
_IDENTITY |= {"random_unwrap", "reduce_precision"}


class _Interp:
    def __init__(self, conv: _Converter):
        self.c = conv
        self._stored: dict[int, tuple[Any, str]] = {}  # id(constant) -> (constant, its name)

    def name(self, value, aval) -> str:
        """ONNX name of a value (a name already, or a constant to store, once: the K Euler steps
        share the velocity net's weights)."""
        if isinstance(value, str):
            return value
        if id(value) in self._stored:
            return self._stored[id(value)][1]
        if _is_key(aval.dtype):
            name = self.c.const(np.asarray(jax.random.key_data(value)), np.uint32)
        else:
            name = self.c.const(np.asarray(value, dtype=aval.dtype))
        self._stored[id(value)] = (value, name)  # holding the value keeps its id unique
        return name

    def run(self, jaxpr, consts, args) -> list:
        env: dict = {}

        def read(v):
            lit = _literal_value(v)
            if lit is not None:
                return np.asarray(lit, dtype=v.aval.dtype)
            return env[v]

        for v, c in zip(jaxpr.constvars, consts, strict=True):
            env[v] = c
        for v, a in zip(jaxpr.invars, args, strict=True):
            env[v] = a
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            outs = self.eqn(eqn, ins)
            for v, o in zip(eqn.outvars, outs, strict=True):
                env[v] = o
        return [read(v) for v in jaxpr.outvars]

    def eqn(self, eqn, ins) -> list:
        prim = eqn.primitive.name
        foldable = all(not isinstance(x, str) for x in ins) and all(
            _static_shape(v.aval.shape) for v in eqn.outvars
        )
        if foldable:  # constants only: evaluate in JAX, store the result
            with jax.ensure_compile_time_eval():
                out = eqn.primitive.bind(*ins, **eqn.params)
            return list(out) if eqn.primitive.multiple_results else [out]
        if prim in _INLINE:
            sub = _sub_jaxpr(eqn)
            if sub is None:
                raise NotImplementedError(f"{prim} without a sub-jaxpr")
            jaxpr, consts = sub
            return self.run(jaxpr, consts, ins)
        if prim in _IDENTITY:
            return [self.name(ins[0], eqn.invars[0].aval)]
        if prim == "gather":
            if isinstance(ins[1], str):
                raise NotImplementedError("gather with indices computed at run time")
            x = self.name(ins[0], eqn.invars[0].aval)
            return [_gather(self.c, eqn, x, np.asarray(ins[1]), **eqn.params)]
        rule = _RULES.get(prim)
        if rule is None:
            raise NotImplementedError(
                f"the ONNX export does not know the JAX primitive {prim!r} (rfs_jax.onnx_export)"
            )
        names = [self.name(x, v.aval) for x, v in zip(ins, eqn.invars, strict=True)]
        out = rule(self.c, eqn, *names, **eqn.params)
        return out if isinstance(out, list) else [out]


# ---- rules: (conv, eqn, *input names, **params) -> name or [names] -----------------------------
_RULES: dict[str, Callable] = {}


def _rule(*names):
    def deco(fn):
        for n in names:
            _RULES[n] = fn
        return fn

    return deco


def _in_aval(eqn, i=0):
    return eqn.invars[i].aval


def _out_aval(eqn, i=0):
    return eqn.outvars[i].aval


def _integer(dtype) -> bool:
    return np.issubdtype(np.dtype(dtype), np.integer)


def _binary(onnx_op, int_op=None, bool_op=None):
    def rule(c, eqn, x, y, **_):
        dtype = _in_aval(eqn).dtype
        if np.dtype(dtype) == np.bool_ and bool_op:
            return c.op(bool_op, x, y)
        if _integer(dtype) and int_op:
            return c.op(int_op, x, y)
        return c.op(onnx_op, x, y)

    return rule


for _jax, _onnx in {
    "add": "Add",
    "add_any": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "max": "Max",
    "min": "Min",
    "pow": "Pow",
    "atan2": "Atan2",
}.items():
    _RULES[_jax] = _binary(_onnx)
_RULES["and"] = _binary("And", int_op="BitwiseAnd", bool_op="And")
_RULES["or"] = _binary("Or", int_op="BitwiseOr", bool_op="Or")
_RULES["xor"] = _binary("Xor", int_op="BitwiseXor", bool_op="Xor")
for _jax, _onnx in {
    "gt": "Greater",
    "lt": "Less",
    "ge": "GreaterOrEqual",
    "le": "LessOrEqual",
    "eq": "Equal",
}.items():
    _RULES[_jax] = _binary(_onnx)


@_rule("ne")
def _ne(c, eqn, x, y, **_):
    return c.op("Not", c.op("Equal", x, y))


for _jax, _onnx in {
    "neg": "Neg",
    "exp": "Exp",
    "log": "Log",
    "sin": "Sin",
    "cos": "Cos",
    "tan": "Tan",
    "tanh": "Tanh",
    "sqrt": "Sqrt",
    "abs": "Abs",
    "sign": "Sign",
    "floor": "Floor",
    "ceil": "Ceil",
    "logistic": "Sigmoid",
    "erf": "Erf",
    "asin": "Asin",
    "acos": "Acos",
    "atan": "Atan",
}.items():
    _RULES[_jax] = lambda c, eqn, x, _op=_onnx, **_: c.op(_op, x)


@_rule("not")
def _not(c, eqn, x, **_):
    dtype = _in_aval(eqn).dtype
    return c.op("Not" if np.dtype(dtype) == np.bool_ else "BitwiseNot", x)


@_rule("rsqrt")
def _rsqrt(c, eqn, x, **_):
    return c.op("Reciprocal", c.op("Sqrt", x))


@_rule("square")
def _square(c, eqn, x, **_):
    return c.op("Mul", x, x)


@_rule("integer_pow")
def _integer_pow(c, eqn, x, *, y, **_):
    if y == 0:
        return c.op("Expand", c.const(np.ones((), _in_aval(eqn).dtype)), c.op("Shape", x))
    base = x if y > 0 else c.op("Reciprocal", x)
    acc = base
    for _ in range(abs(y) - 1):
        acc = c.op("Mul", acc, base)
    return acc


@_rule("exp2")
def _exp2(c, eqn, x, **_):
    return c.op("Pow", c.const(np.asarray(2.0, _in_aval(eqn).dtype)), x)


def _log1p(c, x, dtype):
    """log(1 + x) accurate for small x: log(u) * x / (u - 1), u = 1 + x (Goldberg)."""
    one = c.const(np.asarray(1.0, dtype))
    u = c.op("Add", x, one)
    um1 = c.op("Sub", u, one)
    safe = c.op("Where", c.op("Equal", um1, c.const(np.asarray(0.0, dtype))), one, um1)
    scaled = c.op("Div", c.op("Mul", c.op("Log", u), x), safe)
    return c.op("Where", c.op("Equal", u, one), x, scaled)


@_rule("log1p")
def _log1p_rule(c, eqn, x, **_):
    return _log1p(c, x, _in_aval(eqn).dtype)


@_rule("expm1")
def _expm1(c, eqn, x, **_):
    return c.op("Sub", c.op("Exp", x), c.const(np.asarray(1.0, _in_aval(eqn).dtype)))


@_rule("erf_inv")
def _erf_inv(c, eqn, x, **_):
    dtype = _in_aval(eqn).dtype
    if np.dtype(dtype) != np.float32:
        raise NotImplementedError(f"erf_inv of {dtype} (only float32)")

    def k(v):
        return c.const(np.asarray(v, np.float32))

    w = c.op("Neg", _log1p(c, c.op("Neg", c.op("Mul", x, x)), np.float32))
    lt = c.op("Less", w, k(5.0))
    w = c.op("Where", lt, c.op("Sub", w, k(2.5)), c.op("Sub", c.op("Sqrt", w), k(3.0)))
    p = None
    for lo, hi in zip(_ERFINV_W_LT_5, _ERFINV_W_GE_5, strict=True):
        coef = c.op("Where", lt, k(lo), k(hi))
        p = coef if p is None else c.op("Add", coef, c.op("Mul", p, w))
    result = c.op("Mul", p, x)
    edge = c.op("Equal", c.op("Abs", x), k(1.0))
    return c.op("Where", edge, c.op("Mul", x, k(np.inf)), result)


@_rule("clamp")
def _clamp(c, eqn, lo, x, hi, **_):
    return c.op("Min", c.op("Max", x, lo), hi)


@_rule("select_n")
def _select_n(c, eqn, pred, *cases, **_):
    if len(cases) != 2:
        raise NotImplementedError(f"select_n with {len(cases)} cases (only 2)")
    if np.dtype(_in_aval(eqn).dtype) != np.bool_:
        pred = c.op("Cast", pred, to=c.T.BOOL)
    return c.op("Where", pred, cases[1], cases[0])


@_rule("convert_element_type")
def _convert(c, eqn, x, *, new_dtype, **_):
    if np.dtype(new_dtype) == np.dtype(_in_aval(eqn).dtype):
        return c.op("Identity", x)
    return c.op("Cast", x, to=c.onnx_type(new_dtype))


@_rule("bitcast_convert_type")
def _bitcast(c, eqn, x, *, new_dtype, **_):
    src, dst = np.dtype(_in_aval(eqn).dtype), np.dtype(new_dtype)
    if src.itemsize == dst.itemsize and _integer(src) and _integer(dst):
        return c.op("Cast", x, to=c.onnx_type(dst))  # two's complement wrap, as a bitcast
    if src in (np.dtype(np.uint32), np.dtype(np.int32)) and dst == np.float32:
        # IEEE 754 from its fields: (-1)^s 2^(e - 127) (1 + m 2^-23); normal numbers only
        # (what jax.random's uniform builds: exponent 127, a 23-bit mantissa).
        u = x if src == np.uint32 else c.op("Cast", x, to=c.T.UINT32)

        def u32(v):
            return c.const(np.asarray(v, np.uint32))

        def f32(v):
            return c.const(np.asarray(v, np.float32))

        sign = c.op("BitShift", u, u32(31), direction="RIGHT")
        exponent = c.op("BitwiseAnd", c.op("BitShift", u, u32(23), direction="RIGHT"), u32(0xFF))
        mantissa = c.op("BitwiseAnd", u, u32(0x7FFFFF))
        sign_f = c.op("Sub", f32(1.0), c.op("Mul", f32(2.0), c.op("Cast", sign, to=c.T.FLOAT)))
        scale = c.op("Pow", f32(2.0), c.op("Sub", c.op("Cast", exponent, to=c.T.FLOAT), f32(127)))
        frac = c.op("Add", f32(1.0), c.op("Mul", c.op("Cast", mantissa, to=c.T.FLOAT), f32(2**-23)))
        return c.op("Mul", sign_f, c.op("Mul", scale, frac))
    raise NotImplementedError(f"bitcast_convert_type {src} -> {dst}")


def _shift(direction):
    def rule(c, eqn, x, y, **_):
        dtype = np.dtype(_in_aval(eqn).dtype)
        if np.issubdtype(dtype, np.unsignedinteger):
            return c.op("BitShift", x, y, direction=direction)
        if dtype == np.int32:
            ux, uy = (c.op("Cast", v, to=c.T.UINT32) for v in (x, y))
            return c.op("Cast", c.op("BitShift", ux, uy, direction=direction), to=c.T.INT32)
        raise NotImplementedError(f"shift of {dtype}")

    return rule


_RULES["shift_right_logical"] = _shift("RIGHT")
_RULES["shift_left"] = _shift("LEFT")


@_rule("broadcast_in_dim")
def _broadcast_in_dim(c, eqn, x, *, shape, broadcast_dimensions, **_):
    in_shape = tuple(_in_aval(eqn).shape)
    target = [1] * len(shape)
    for i, d in enumerate(broadcast_dimensions):
        target[d] = in_shape[i]
    if not _dims_equal(in_shape, target):
        x = c.op("Reshape", x, c.shape(target))
    if _dims_equal(target, shape):
        return x if not _dims_equal(in_shape, target) else c.op("Identity", x)
    return c.op("Expand", x, c.shape(shape))


@_rule("reshape")
def _reshape(c, eqn, x, *, new_sizes, dimensions=None, **_):
    if dimensions is not None:
        raise NotImplementedError("reshape with dimensions")
    return c.op("Reshape", x, c.shape(new_sizes))


@_rule("squeeze")
def _squeeze(c, eqn, x, *, dimensions, **_):
    return c.op("Squeeze", x, c.const(np.array(dimensions, np.int64)))


@_rule("expand_dims")
def _expand_dims(c, eqn, x, *, dimensions, **_):
    return c.op("Unsqueeze", x, c.const(np.array(dimensions, np.int64)))


@_rule("concatenate")
def _concatenate(c, eqn, *xs, dimension, **_):
    return c.op("Concat", *xs, axis=int(dimension))


def _slice(c, x, in_shape, starts, limits, strides=None):
    axes, s_, e_, st_ = [], [], [], []
    for axis, (start, limit, dim) in enumerate(zip(starts, limits, in_shape, strict=True)):
        step = 1 if strides is None else strides[axis]
        if _is_static(start) and start == 0 and step == 1 and (limit == dim):
            continue
        if not (_is_static(start) and _is_static(limit)):
            raise NotImplementedError("slice of part of a symbolic dimension")
        axes.append(axis)
        s_.append(int(start))
        e_.append(int(limit))
        st_.append(int(step))
    if not axes:
        return c.op("Identity", x)
    return c.op(
        "Slice",
        x,
        c.const(np.array(s_, np.int64)),
        c.const(np.array(e_, np.int64)),
        c.const(np.array(axes, np.int64)),
        c.const(np.array(st_, np.int64)),
    )


@_rule("slice")
def _slice_rule(c, eqn, x, *, start_indices, limit_indices, strides=None, **_):
    return _slice(c, x, _in_aval(eqn).shape, start_indices, limit_indices, strides)


def _gather(c, eqn, x, starts, *, dimension_numbers, slice_sizes, **_):
    """Only gathers that are static slices: constant start indices, every operand dim kept."""
    dn = dimension_numbers
    shape = tuple(_in_aval(eqn).shape)
    ok = (
        tuple(dn.offset_dims) == tuple(range(len(shape)))
        and not dn.collapsed_slice_dims
        and not dn.operand_batching_dims
        and starts.shape == (len(dn.start_index_map),)
    )
    if not ok:
        raise NotImplementedError("gather other than a static slice")
    begin = [0] * len(shape)
    for axis, s in zip(dn.start_index_map, starts, strict=True):
        size = slice_sizes[axis]
        begin[axis] = int(np.clip(int(s), 0, int(shape[axis]) - int(size)))
    limits = [b + s if _is_static(s) else s for b, s in zip(begin, slice_sizes, strict=True)]
    return _slice(c, x, shape, begin, limits)


@_rule("dot_general")
def _dot_general(c, eqn, x, y, *, dimension_numbers, **_):
    (lc, rc), (lb, rb) = dimension_numbers
    lx, ry = len(_in_aval(eqn, 0).shape), len(_in_aval(eqn, 1).shape)
    if not lb and not rb and tuple(lc) == (lx - 1,) and tuple(rc) == (0,) and ry == 2:
        return c.op("MatMul", x, y)
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lhs = [next(letters) for _ in range(lx)]
    rhs = [None] * ry
    for i, j in zip(lb, rb, strict=True):
        rhs[j] = lhs[i]
    for i, j in zip(lc, rc, strict=True):
        rhs[j] = lhs[i]
    rhs = [r or next(letters) for r in rhs]
    out = [lhs[i] for i in lb]
    out += [lhs[i] for i in range(lx) if i not in lb and i not in lc]
    out += [rhs[j] for j in range(ry) if j not in rb and j not in rc]
    equation = f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"
    return c.op("Einsum", x, y, equation=equation)


def _reduce(onnx_op):
    def rule(c, eqn, x, *, axes, **_):
        return c.op(onnx_op, x, c.const(np.array(axes, np.int64)), keepdims=0)

    return rule


_RULES["reduce_sum"] = _reduce("ReduceSum")
_RULES["reduce_max"] = _reduce("ReduceMax")
_RULES["reduce_min"] = _reduce("ReduceMin")


@_rule("iota")
def _iota(c, eqn, *, dtype, shape, dimension, **_):
    n = c.op("Squeeze", c.dim(shape[dimension]), c.const(np.array([0], np.int64)))
    r = c.op("Range", c.const(np.asarray(0, np.int64)), n, c.const(np.asarray(1, np.int64)))
    r = c.op("Cast", r, to=c.onnx_type(dtype))
    target = [1] * len(shape)
    target[dimension] = shape[dimension]
    return c.op("Expand", c.op("Reshape", r, c.shape(target)), c.shape(shape))


# ---- threefry (jax._src.random.threefry2x32, partitionable) ------------------------------------
def _u32(c, v):
    return c.const(np.asarray(v, np.uint32))


def _rotl(c, v, r):
    left = c.op("BitShift", v, _u32(c, r), direction="LEFT")
    return c.op("BitwiseOr", left, c.op("BitShift", v, _u32(c, 32 - r), direction="RIGHT"))


def _threefry2x32(c, k1, k2, x1, x2):
    """The Threefry-2x32 hash of counters (x1, x2) under key (k1, k2), uint32 tensors."""
    ks = [k1, k2, c.op("BitwiseXor", c.op("BitwiseXor", k1, k2), _u32(c, 0x1BD11BDA))]
    x = [c.op("Add", x1, ks[0]), c.op("Add", x2, ks[1])]
    for i in range(5):
        for r in _THREEFRY_ROTATIONS[i % 2]:
            x0 = c.op("Add", x[0], x[1])
            x = [x0, c.op("BitwiseXor", x0, _rotl(c, x[1], r))]
        a, b = ks[(i + 1) % 3], ks[(i + 2) % 3]
        x = [c.op("Add", x[0], a), c.op("Add", c.op("Add", x[1], b), _u32(c, i + 1))]
    return x


def _key_halves(c, key):
    """(k1, k2) uint32 scalars of a single key's data uint32[2]."""
    k = [c.op("Gather", key, c.const(np.asarray(i, np.int64)), axis=0) for i in (0, 1)]
    return k[0], k[1]


def _counters(c, shape):
    """(hi, lo) uint32 counters of ``shape``: the row-major index of each element."""
    size = c.op("ReduceProd", c.shape(shape), keepdims=0)
    lo = c.op("Range", c.const(np.asarray(0, np.int64)), size, c.const(np.asarray(1, np.int64)))
    lo = c.op("Reshape", c.op("Cast", lo, to=c.T.UINT32), c.shape(shape))
    hi = c.op("Mul", lo, _u32(c, 0))
    return hi, lo


def _check_partitionable():
    if not jax.config.jax_threefry_partitionable:
        raise NotImplementedError("ONNX export of jax.random needs jax_threefry_partitionable")


def _check_single_key(eqn):
    if tuple(_in_aval(eqn).shape) != ():
        raise NotImplementedError("jax.random on a batch of keys (only single keys)")


@_rule("random_bits")
def _random_bits(c, eqn, key, *, bit_width, shape, **_):
    _check_partitionable()
    _check_single_key(eqn)
    if bit_width not in (8, 16, 32):
        raise NotImplementedError(f"random_bits of {bit_width} bits")
    k1, k2 = _key_halves(c, key)
    hi, lo = _counters(c, shape)
    b1, b2 = _threefry2x32(c, k1, k2, hi, lo)
    bits = c.op("BitwiseXor", b1, b2)
    if bit_width != 32:
        bits = c.op("Cast", bits, to=c.onnx_type(_out_aval(eqn).dtype))
    return bits


@_rule("random_split")
def _random_split(c, eqn, key, *, shape, **_):
    _check_partitionable()
    _check_single_key(eqn)
    k1, k2 = _key_halves(c, key)
    hi, lo = _counters(c, shape)
    b1, b2 = _threefry2x32(c, k1, k2, hi, lo)
    last = c.const(np.array([len(shape)], np.int64))
    return c.op("Concat", c.op("Unsqueeze", b1, last), c.op("Unsqueeze", b2, last), axis=-1)


@_rule("threefry2x32")
def _threefry_rule(c, eqn, k1, k2, x1, x2, **_):
    return _threefry2x32(c, k1, k2, x1, x2)


# ---- entry point --------------------------------------------------------------------------------
def _value_info(c: _Converter, name: str, aval, dim_names: dict):
    from onnx import helper

    shape = [d if _is_static(d) else dim_names.get(str(d), str(d)) for d in aval.shape]
    dtype = np.uint32 if _is_key(aval.dtype) else aval.dtype
    if _is_key(aval.dtype):
        shape = shape + [2]
    return helper.make_tensor_value_info(name, c.onnx_type(dtype), shape)


def to_onnx(
    fn: Callable,
    inputs: Sequence[tuple[str, jax.ShapeDtypeStruct]],
    output_names: Sequence[str],
    *,
    opset: int = OPSET,
    dim_names: dict[str, str] | None = None,
    doc: str = "",
):
    """The ONNX model of ``fn(*inputs) -> outputs`` (a tuple, or one array).

    ``inputs`` are ``(name, jax.ShapeDtypeStruct)``; a symbolic dimension (from
    ``jax.export.symbolic_shape``) is dynamic in the model, named by ``dim_names`` (symbol ->
    ONNX name, e.g. ``{"b": "batch"}``). Everything ``fn`` closes over is baked in.
    """
    import onnx
    from onnx import helper

    dim_names = dim_names or {}
    specs = [s for _, s in inputs]
    closed = jax.make_jaxpr(fn)(*specs)
    conv = _Converter(opset)
    interp = _Interp(conv)
    for name, spec in inputs:
        conv.add_input(name, spec)
    outs = interp.run(closed.jaxpr, list(closed.consts), [name for name, _ in inputs])
    out_avals = [v.aval for v in closed.jaxpr.outvars]
    if len(outs) != len(output_names):
        raise ValueError(f"fn returns {len(outs)} outputs, got {len(output_names)} names")
    for out, name, aval in zip(outs, output_names, out_avals, strict=True):
        conv.nodes.append(helper.make_node("Identity", [interp.name(out, aval)], [name]))
    graph = helper.make_graph(
        conv.nodes,
        "policy",
        [
            _value_info(conv, name, jax.core.ShapedArray(s.shape, s.dtype), dim_names)
            for name, s in inputs
        ],
        [
            _value_info(conv, name, aval, dim_names)
            for name, aval in zip(output_names, out_avals, strict=True)
        ],
        conv.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="rfs_jax"
    )
    model.ir_version = 8  # what opset 18 needs; readable by onnxruntime >= 1.14
    model.doc_string = doc
    onnx.checker.check_model(model)
    return model
