//! [`OnnxRecorder`]: the second implementation of [`Ops`], which records ONNX nodes (opset 17)
//! instead of computing.
//!
//! The networks of `sasrec-models` are written once against [`Ops`]; replaying
//! `SeqRecModel::forward_with` on a recorder yields the same computation as an ONNX graph, so
//! there is no second, hand-written copy of any network to keep in sync. Each trait method
//! emits the operator(s) its documentation names:
//!
//! * [`Ops::param`] emits an initializer named exactly like the checkpoint tensor (its state-dict
//!   key) holding its fp32 values, once per parameter;
//! * constants (`add_scalar`, `masked_fill`, the index lists of `Reshape`/`Slice`/`Unsqueeze`…)
//!   become `Constant` nodes of the operand's element type, so that strict type inference
//!   (`onnx.checker.check_model(full_check=True)`) holds;
//! * no shape is ever baked in: the batch dimension stays symbolic because the networks only
//!   use ONNX-style shapes (`0` = copy, `-1` = infer) and [`Ops::range_of`]
//!   (`Shape` → `Squeeze` → `Range`);
//! * dropout is the identity: a recorder only ever sees `train = false`. Recording with
//!   `train = true` is an error reported by [`OnnxRecorder::finish`] (the trait methods cannot
//!   fail, so misuse is collected and surfaced once).
//!
//! The few operators the export head needs beyond the network (`TopK`, `ScatterElements`,
//! `ConstantOfShape`, graph inputs and outputs) are inherent methods.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use sasrec_models::{DType, Ops, Param};
use tch::{Device, Kind};

use crate::error::{Error, Result};
use crate::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// A value of the graph under construction: its name and element type.
///
/// Cheap to clone; cloning refers to the same graph value (which is how
/// [`Ops::identity`] and no-op casts are recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    name: String,
    dtype: DType,
}

impl Value {
    /// The value's name in the graph (an input, initializer or node output).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A symbolic size (ONNX `dim_param`), e.g. `"batch"`.
    Named(String),
}

impl Dim {
    /// A symbolic dimension named `name`.
    pub fn named(name: &str) -> Self {
        Self::Named(name.to_string())
    }
}

/// The ONNX element type code of `dtype`.
fn onnx_type(dtype: DType) -> i32 {
    match dtype {
        DType::F32 => DataType::Float as i32,
        DType::I64 => DataType::Int64 as i32,
        DType::Bool => DataType::Bool as i32,
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

/// A tensor of `dtype` with `dims` holding `values` (converted to the element type; integer
/// types truncate, as `TchOps` does with `v as i64`).
fn tensor_proto(dtype: DType, dims: &[i64], values: &[f64]) -> TensorProto {
    let raw: Vec<u8> = match dtype {
        DType::F32 => values
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect(),
        DType::I64 => values
            .iter()
            .flat_map(|&v| (v as i64).to_le_bytes())
            .collect(),
        DType::Bool => values.iter().map(|&v| u8::from(v != 0.0)).collect(),
    };
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(onnx_type(dtype)),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// `ValueInfoProto` of a tensor with element type `dtype` and shape `dims`.
pub(crate) fn value_info(name: &str, dtype: DType, dims: &[Dim], doc: &str) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n),
                Dim::Named(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(onnx_type(dtype)),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        doc_string: (!doc.is_empty()).then(|| doc.to_string()),
        ..Default::default()
    }
}

#[derive(Debug, Default)]
struct State {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    initializer_names: HashSet<String>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    /// Node outputs written under a graph output's name instead (applied by `finish`).
    output_names: HashMap<String, String>,
    /// Parameters read from a graph input instead of an initializer
    /// ([`OnnxRecorder::param_from_input`]).
    param_inputs: HashMap<String, Value>,
    next_id: usize,
    errors: Vec<String>,
}

/// Records [`Ops`] calls as an ONNX graph (opset 17, default domain, fp32).
///
/// ```no_run
/// # use sasrec_export::recorder::{Dim, OnnxRecorder};
/// # use sasrec_models::{DType, SeqRecModel};
/// # fn f(model: &SeqRecModel) -> sasrec_export::Result<()> {
/// let rec = OnnxRecorder::new();
/// let seq = rec.input("seq", DType::I64, &[Dim::named("batch"), Dim::Fixed(200)], "");
/// let h = model.forward_with(&rec, &seq, None, true, false).unwrap(); // (B, 1, C)
/// rec.output(&h, "h", &[Dim::named("batch"), Dim::Fixed(1), Dim::Fixed(50)], "");
/// let graph = rec.finish("sasrec")?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct OnnxRecorder {
    state: RefCell<State>,
}

impl OnnxRecorder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes a misuse; [`OnnxRecorder::finish`] fails with every message noted.
    fn fail(&self, msg: String) {
        self.state.borrow_mut().errors.push(msg);
    }

    /// Appends a node with one output per entry of `out_types` and returns the outputs.
    fn node_n(
        &self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        out_types: &[DType],
    ) -> Vec<Value> {
        let mut st = self.state.borrow_mut();
        let id = st.next_id;
        st.next_id += 1;
        let node_name = format!("{op}_{id}");
        let outputs: Vec<Value> = out_types
            .iter()
            .enumerate()
            .map(|(i, &dtype)| Value {
                name: if out_types.len() == 1 {
                    format!("{node_name}_out")
                } else {
                    format!("{node_name}_out{i}")
                },
                dtype,
            })
            .collect();
        st.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|v| v.name.clone()).collect(),
            name: Some(node_name),
            op_type: Some(op.to_string()),
            attribute: attrs,
            ..Default::default()
        });
        outputs
    }

    /// Appends a node with a single output of type `dtype`.
    fn node(&self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, dtype: DType) -> Value {
        self.node_n(op, inputs, attrs, &[dtype])
            .pop()
            .expect("node_n returns one value per requested type")
    }

    /// A `Constant` node of `dtype` with `dims` and `values`.
    fn constant(&self, dtype: DType, dims: &[i64], values: &[f64]) -> Value {
        let t = tensor_proto(dtype, dims, values);
        self.node("Constant", &[], vec![attr_tensor("value", t)], dtype)
    }

    /// A scalar constant of `dtype`.
    fn scalar(&self, dtype: DType, v: f64) -> Value {
        if dtype == DType::I64 && v.fract() != 0.0 {
            self.fail(format!("integer constant {v} is not an integer"));
        }
        self.constant(dtype, &[], &[v])
    }

    /// A 1-D int64 constant (shapes, axes, slice bounds).
    fn ints(&self, v: &[i64]) -> Value {
        let t = TensorProto {
            dims: vec![v.len() as i64],
            data_type: Some(onnx_type(DType::I64)),
            raw_data: Some(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ..Default::default()
        };
        self.node("Constant", &[], vec![attr_tensor("value", t)], DType::I64)
    }

    fn unary(&self, op: &str, x: &Value) -> Value {
        self.node(op, &[&x.name], vec![], x.dtype)
    }

    fn binary(&self, op: &str, a: &Value, b: &Value) -> Value {
        if a.dtype != b.dtype {
            self.fail(format!(
                "{op} of {:?} `{}` and {:?} `{}`: ONNX needs equal element types",
                a.dtype, a.name, b.dtype, b.name
            ));
        }
        self.node(op, &[&a.name, &b.name], vec![], a.dtype)
    }

    /// `Shape(x)[start:end]` (Shape-15 attributes; `end = None` runs to the last dimension).
    fn shape_part(&self, x: &Value, start: i64, end: Option<i64>) -> Value {
        let mut attrs = vec![attr_int("start", start)];
        attrs.extend(end.map(|e| attr_int("end", e)));
        self.node("Shape", &[&x.name], attrs, DType::I64)
    }

    /// A reduction over `dim` whose axes are an attribute (ReduceMean, ReduceMax below opset 18;
    /// ReduceSum-13 takes them as an input instead).
    fn reduce_with_axes_attr(&self, op: &str, x: &Value, dim: i64, keepdim: bool) -> Value {
        let attrs = vec![
            attr_ints("axes", &[dim]),
            attr_int("keepdims", i64::from(keepdim)),
        ];
        self.node(op, &[&x.name], attrs, x.dtype)
    }

    /// `Expand(idx, shape)`: broadcasts the index tensor to a concrete shape.
    fn expand(&self, x: &Value, shape: &Value) -> Value {
        self.node("Expand", &[&x.name, &shape.name], vec![], x.dtype)
    }

    /// Declares a graph input.
    pub fn input(&self, name: &str, dtype: DType, dims: &[Dim], doc: &str) -> Value {
        self.state
            .borrow_mut()
            .inputs
            .push(value_info(name, dtype, dims, doc));
        Value {
            name: name.to_string(),
            dtype,
        }
    }

    /// Declares `x` as the graph output `name`. A node's output is written under `name` in
    /// place (every consumer reads it from there; applied by [`OnnxRecorder::finish`]): an
    /// `Identity` that renamed it would be a copy ONNX Runtime cannot remove when the value has
    /// other consumers (`TopK` reads the scores) — the whole (batch, I+1) matrix on every run.
    /// From now on the parameter named `param` is `input` (a graph input declared with
    /// [`OnnxRecorder::input`]) wherever the network reads it, and no initializer is written
    /// for it: the open user tower takes the item table this way.
    pub fn param_from_input(&self, param: &str, input: &Value) {
        let mut st = self.state.borrow_mut();
        st.param_inputs.insert(param.to_string(), input.clone());
    }

    /// An `Identity` remains for a graph input or initializer, or a value already declared as
    /// another output.
    pub fn output(&self, x: &Value, name: &str, dims: &[Dim], doc: &str) {
        let mut st = self.state.borrow_mut();
        let produced = st.nodes.iter().any(|n| n.output.contains(&x.name));
        if produced && !st.output_names.contains_key(&x.name) {
            st.output_names.insert(x.name.clone(), name.to_string());
        } else {
            st.nodes.push(NodeProto {
                input: vec![x.name.clone()],
                output: vec![name.to_string()],
                name: Some(format!("output_{name}")),
                op_type: Some("Identity".into()),
                ..Default::default()
            });
        }
        st.outputs.push(value_info(name, x.dtype, dims, doc));
    }

    /// `ConstantOfShape(Shape(like))` filled with `v` of `dtype`.
    pub fn full_like(&self, like: &Value, dtype: DType, v: f64) -> Value {
        let shape = self.node("Shape", &[&like.name], vec![], DType::I64);
        let fill = tensor_proto(dtype, &[1], &[v]);
        self.node(
            "ConstantOfShape",
            &[&shape.name],
            vec![attr_tensor("value", fill)],
            dtype,
        )
    }

    /// `out = x; out[i][indices[i][j]] = updates[i][j]` along `axis` (ONNX `ScatterElements`,
    /// reduction `none`).
    pub fn scatter_elements(
        &self,
        x: &Value,
        indices: &Value,
        updates: &Value,
        axis: i64,
    ) -> Value {
        self.node(
            "ScatterElements",
            &[&x.name, &indices.name, &updates.name],
            vec![attr_int("axis", axis)],
            x.dtype,
        )
    }

    /// The `k` largest entries along the last axis, sorted descending (ONNX `TopK`): `(values,
    /// indices)`; `k` is a 1-element int64 tensor.
    pub fn topk(&self, x: &Value, k: &Value) -> (Value, Value) {
        let mut v = self.node_n(
            "TopK",
            &[&x.name, &k.name],
            vec![
                attr_int("axis", -1),
                attr_int("largest", 1),
                attr_int("sorted", 1),
            ],
            &[x.dtype, DType::I64],
        );
        let idx = v.pop().expect("TopK has two outputs");
        let val = v.pop().expect("TopK has two outputs");
        (val, idx)
    }

    /// Number of nodes recorded so far.
    pub fn num_nodes(&self) -> usize {
        self.state.borrow().nodes.len()
    }

    /// The finished graph named `name`, or every misuse noted while recording.
    pub fn finish(self, name: &str) -> Result<GraphProto> {
        let mut st = self.state.into_inner();
        if !st.errors.is_empty() {
            return Err(Error::Graph(st.errors.join("; ")));
        }
        for node in &mut st.nodes {
            for value in node.input.iter_mut().chain(node.output.iter_mut()) {
                if let Some(output) = st.output_names.get(value.as_str()) {
                    value.clone_from(output);
                }
            }
        }
        Ok(GraphProto {
            node: st.nodes,
            name: Some(name.to_string()),
            initializer: st.initializers,
            input: st.inputs,
            output: st.outputs,
            ..Default::default()
        })
    }
}

/// The dims of `t` and its values as float32 little-endian bytes (ONNX `raw_data`, safetensors
/// `F32`), from any device or float kind. libtorch copies the values' bytes straight into the
/// buffer (one copy, no intermediate `Vec<f32>`: this matters for multi-GB item tables); they
/// are in native byte order, which is little-endian on every target this builds for.
pub fn f32_le_bytes(t: &tch::Tensor) -> std::result::Result<(Vec<i64>, Vec<u8>), tch::TchError> {
    const _: () = assert!(
        cfg!(target_endian = "little"),
        "ONNX raw_data and safetensors are little-endian"
    );
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let numel = t.numel();
    let mut raw = vec![0u8; numel * std::mem::size_of::<f32>()];
    t.f_copy_data_u8(&mut raw, numel)?;
    Ok((t.size(), raw))
}

impl Ops for OnnxRecorder {
    type T = Value;

    fn param(&self, p: &Param) -> Value {
        let name = p.name().to_string();
        if let Some(input) = self.state.borrow().param_inputs.get(&name) {
            return input.clone();
        }
        let value = Value {
            name: name.clone(),
            dtype: DType::F32,
        };
        if self.state.borrow().initializer_names.contains(&name) {
            return value;
        }
        let (dims, raw) = f32_le_bytes(p.tensor()).unwrap_or_else(|e| {
            self.fail(format!("parameter `{name}`: {e}"));
            (p.tensor().size(), Vec::new())
        });
        let init = TensorProto {
            dims,
            data_type: Some(onnx_type(DType::F32)),
            name: Some(name.clone()),
            raw_data: Some(raw),
            ..Default::default()
        };
        let mut st = self.state.borrow_mut();
        st.initializer_names.insert(name);
        st.initializers.push(init);
        value
    }

    fn identity(&self, x: &Value) -> Value {
        x.clone()
    }

    fn gather_rows(&self, table: &Value, ids: &Value, _padding_idx: Option<i64>) -> Value {
        // `padding_idx` only affects gradients.
        self.node(
            "Gather",
            &[&table.name, &ids.name],
            vec![attr_int("axis", 0)],
            table.dtype,
        )
    }

    fn range_of(&self, x: &Value, dim: i64) -> Value {
        // Shape-15 `start`/`end` select one dimension; `end = dim + 1` would be 0 for dim = −1.
        let mut attrs = vec![attr_int("start", dim)];
        if dim != -1 {
            attrs.push(attr_int("end", dim + 1));
        }
        let n = self.node("Shape", &[&x.name], attrs, DType::I64); // (1)
        let axes = self.ints(&[0]);
        let n = self.node("Squeeze", &[&n.name, &axes.name], vec![], DType::I64); // ()
        let (start, delta) = (self.scalar(DType::I64, 0.0), self.scalar(DType::I64, 1.0));
        self.node(
            "Range",
            &[&start.name, &n.name, &delta.name],
            vec![],
            DType::I64,
        )
    }

    fn reshape(&self, x: &Value, shape: &[i64]) -> Value {
        let s = self.ints(shape);
        self.node("Reshape", &[&x.name, &s.name], vec![], x.dtype)
    }

    fn transpose(&self, x: &Value, perm: &[i64]) -> Value {
        self.node(
            "Transpose",
            &[&x.name],
            vec![attr_ints("perm", perm)],
            x.dtype,
        )
    }

    fn unsqueeze(&self, x: &Value, dim: i64) -> Value {
        let axes = self.ints(&[dim]);
        self.node("Unsqueeze", &[&x.name, &axes.name], vec![], x.dtype)
    }

    fn concat(&self, xs: &[&Value], dim: i64) -> Value {
        let Some(first) = xs.first() else {
            self.fail("concat of no tensors".into());
            return Value {
                name: String::new(),
                dtype: DType::F32,
            };
        };
        let names: Vec<&str> = xs.iter().map(|v| v.name.as_str()).collect();
        self.node("Concat", &names, vec![attr_int("axis", dim)], first.dtype)
    }

    fn slice(&self, x: &Value, dim: i64, start: i64, end: i64) -> Value {
        // ONNX clamps out-of-range bounds, so `end = i64::MAX` means "to the end" as documented.
        let (s, e, a) = (self.ints(&[start]), self.ints(&[end]), self.ints(&[dim]));
        self.node(
            "Slice",
            &[&x.name, &s.name, &e.name, &a.name],
            vec![],
            x.dtype,
        )
    }

    fn cast(&self, x: &Value, dtype: DType) -> Value {
        if x.dtype == dtype {
            return x.clone();
        }
        self.node(
            "Cast",
            &[&x.name],
            vec![attr_int("to", onnx_type(dtype) as i64)],
            dtype,
        )
    }

    fn add(&self, a: &Value, b: &Value) -> Value {
        self.binary("Add", a, b)
    }

    fn sub(&self, a: &Value, b: &Value) -> Value {
        self.binary("Sub", a, b)
    }

    fn mul(&self, a: &Value, b: &Value) -> Value {
        self.binary("Mul", a, b)
    }

    fn div(&self, a: &Value, b: &Value) -> Value {
        self.binary("Div", a, b)
    }

    fn constant_like(&self, _like: &Value, values: &[f64], shape: &[i64]) -> Value {
        self.constant(DType::F32, shape, values)
    }

    fn add_scalar(&self, x: &Value, v: f64) -> Value {
        let c = self.scalar(x.dtype, v);
        self.binary("Add", x, &c)
    }

    fn mul_scalar(&self, x: &Value, v: f64) -> Value {
        let c = self.scalar(x.dtype, v);
        self.binary("Mul", x, &c)
    }

    fn sqrt(&self, x: &Value) -> Value {
        self.unary("Sqrt", x)
    }

    fn exp(&self, x: &Value) -> Value {
        self.unary("Exp", x)
    }

    fn relu(&self, x: &Value) -> Value {
        self.unary("Relu", x)
    }

    fn sigmoid(&self, x: &Value) -> Value {
        self.unary("Sigmoid", x)
    }

    fn eq_scalar(&self, x: &Value, v: i64) -> Value {
        let c = self.scalar(x.dtype, v as f64);
        self.node("Equal", &[&x.name, &c.name], vec![], DType::Bool)
    }

    fn gt(&self, a: &Value, b: &Value) -> Value {
        let out = self.binary("Greater", a, b);
        Value {
            dtype: DType::Bool,
            ..out
        }
    }

    fn not(&self, x: &Value) -> Value {
        self.unary("Not", x)
    }

    fn masked_fill(&self, x: &Value, mask: &Value, v: f64) -> Value {
        // The graph is fp32, whose range holds every fill value used (−2³²+1, −∞), so no clamp.
        let c = self.scalar(x.dtype, v);
        self.node("Where", &[&mask.name, &c.name, &x.name], vec![], x.dtype)
    }

    fn sum(&self, x: &Value, dim: i64, keepdim: bool) -> Value {
        // ReduceSum-13 takes the axes as an input, ReduceMean/ReduceMax (< 18) as an attribute.
        let axes = self.ints(&[dim]);
        self.node(
            "ReduceSum",
            &[&x.name, &axes.name],
            vec![attr_int("keepdims", i64::from(keepdim))],
            x.dtype,
        )
    }

    fn mean(&self, x: &Value, dim: i64, keepdim: bool) -> Value {
        self.reduce_with_axes_attr("ReduceMean", x, dim, keepdim)
    }

    fn max(&self, x: &Value, dim: i64, keepdim: bool) -> Value {
        self.reduce_with_axes_attr("ReduceMax", x, dim, keepdim)
    }

    fn take_along_last(&self, x: &Value, idx: &Value) -> Value {
        let lead = self.shape_part(x, 0, Some(-1));
        let last = self.shape_part(idx, -1, None);
        let shape = self.node(
            "Concat",
            &[&lead.name, &last.name],
            vec![attr_int("axis", 0)],
            DType::I64,
        );
        let idx = self.expand(idx, &shape);
        self.node(
            "GatherElements",
            &[&x.name, &idx.name],
            vec![attr_int("axis", -1)],
            x.dtype,
        )
    }

    fn scatter_add_last(&self, src: &Value, idx: &Value, buckets: i64) -> Value {
        let idx = self.expand(idx, &self.shape_part(src, 0, None));
        let lead = self.shape_part(src, 0, Some(-1));
        let n = self.ints(&[buckets]);
        let shape = self.node(
            "Concat",
            &[&lead.name, &n.name],
            vec![attr_int("axis", 0)],
            DType::I64,
        );
        let fill = tensor_proto(src.dtype, &[1], &[0.0]);
        let zeros = self.node(
            "ConstantOfShape",
            &[&shape.name],
            vec![attr_tensor("value", fill)],
            src.dtype,
        );
        self.node(
            "ScatterElements",
            &[&zeros.name, &idx.name, &src.name],
            vec![attr_int("axis", -1), attr_string("reduction", "add")],
            src.dtype,
        )
    }

    fn sinkhorn(&self, logits: &Value, iters: usize) -> Value {
        sasrec_models::sinkhorn::sinkhorn_unrolled(self, logits, iters)
    }

    fn matmul(&self, a: &Value, b: &Value) -> Value {
        self.binary("MatMul", a, b)
    }

    fn linear(&self, x: &Value, w: &Value, b: Option<&Value>) -> Value {
        // Transpose of an initializer (or of a Slice of one) is constant-folded by ONNX Runtime.
        let wt = self.transpose(w, &[1, 0]); // (in, out)
        let y = self.binary("MatMul", x, &wt);
        match b {
            Some(b) => self.binary("Add", &y, b),
            None => y,
        }
    }

    fn layer_norm(&self, x: &Value, w: &Value, b: &Value, eps: f64) -> Value {
        self.node(
            "LayerNormalization",
            &[&x.name, &w.name, &b.name],
            vec![attr_int("axis", -1), attr_float("epsilon", eps as f32)],
            x.dtype,
        )
    }

    fn softmax(&self, x: &Value, dim: i64) -> Value {
        self.node("Softmax", &[&x.name], vec![attr_int("axis", dim)], x.dtype)
    }

    fn dropout(&self, x: &Value, p: f64, train: bool) -> Value {
        if train && p > 0.0 {
            self.fail(
                "dropout with train = true cannot be exported (record with train = false)".into(),
            );
        }
        x.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_mismatch_and_training_dropout_are_reported() {
        let rec = OnnxRecorder::new();
        let a = rec.input("a", DType::F32, &[Dim::Fixed(2)], "");
        let b = rec.input("b", DType::I64, &[Dim::Fixed(2)], "");
        let _ = rec.add(&a, &b);
        let _ = rec.dropout(&a, 0.2, true);
        let e = rec.finish("g").unwrap_err().to_string();
        assert!(
            e.contains("equal element types") && e.contains("train = true"),
            "{e}"
        );
    }

    #[test]
    fn identity_and_same_type_cast_add_no_node() {
        let rec = OnnxRecorder::new();
        let a = rec.input("a", DType::F32, &[Dim::Fixed(2)], "");
        assert_eq!(rec.identity(&a), a);
        assert_eq!(rec.cast(&a, DType::F32), a);
        assert_eq!(rec.num_nodes(), 0);
        let c = rec.cast(&a, DType::I64);
        assert_eq!(c.dtype(), DType::I64);
        assert_eq!(rec.num_nodes(), 1);
    }
}
