/**
 * Builds ONNX models in TypeScript: a graph of standard operators (default domain, opset 17) with
 * weights as initializers, serialized to a `ModelProto` that ONNX Runtime loads from memory.
 *
 * Field numbers are those of onnx/onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto,
 * TensorProto, ValueInfoProto, TypeProto, TensorShapeProto). Values are named strings; `op()`
 * returns the name of a node's output, so graph code reads like tensor code:
 *
 *     const g = new OnnxGraph('sae');
 *     const x = g.input('x', 'float32', ['n', 512]);
 *     const f = g.op('Relu', [g.op('Gemm', [x, g.constant('W_enc', w, [512, 4096]), g.constant('b_enc', b, [4096])])]);
 *     g.output('codes', f, 'float32', ['n', 4096]);
 *     const bytes = g.toModel();
 */
import { ProtoWriter } from '../io/protobuf.js';

/** A dimension: a size, or a symbolic name for one fixed only when the model runs. */
export type Dim = number | string;

export type ElementType = 'float32' | 'int64' | 'int32' | 'bool';

/** TensorProto.DataType codes. */
const DATA_TYPE: Readonly<Record<ElementType, number>> = { float32: 1, int32: 6, int64: 7, bool: 9 };

/** An attribute value with its ONNX type spelled out (an int and a float look alike in JS). */
export type Attr =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'floats'; value: readonly number[] }
  | { kind: 'string'; value: string };

export const int = (value: number): Attr => ({ kind: 'int', value });
export const float = (value: number): Attr => ({ kind: 'float', value });
export const ints = (value: readonly number[]): Attr => ({ kind: 'ints', value });
export const floats = (value: readonly number[]): Attr => ({ kind: 'floats', value });
export const str = (value: string): Attr => ({ kind: 'string', value });

/** AttributeProto.AttributeType codes. */
const ATTR_TYPE = { float: 1, int: 2, string: 3, floats: 6, ints: 7 } as const;

/** The opset every graph here is written against (LayerNormalization needs 17). */
export const OPSET = 17;
/** IR version 8 (ONNX 1.10+), which every ONNX Runtime since 1.10 reads. */
const IR_VERSION = 8;

type TensorData = Float32Array | Int32Array | BigInt64Array | Uint8Array;

interface Initializer {
  name: string;
  type: ElementType;
  dims: readonly number[];
  data: TensorData;
}

interface ValueInfo {
  name: string;
  type: ElementType;
  dims: readonly Dim[];
}

interface Node {
  op: string;
  inputs: readonly string[];
  outputs: readonly string[];
  attrs: Readonly<Record<string, Attr>>;
}

function elementTypeOf(data: TensorData): ElementType {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  return 'bool';
}

function tensorProto(t: Initializer): ProtoWriter {
  const p = new ProtoWriter().packedInt64(1, t.dims).int64(2, DATA_TYPE[t.type]).string(8, t.name);
  // raw_data is little-endian, as typed arrays are on every platform Node runs on.
  return p.bytes(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
}

function valueInfoProto(v: ValueInfo): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of v.dims) shape.message(1, typeof d === 'number' ? new ProtoWriter().int64(1, d) : new ProtoWriter().string(2, d));
  const tensorType = new ProtoWriter().int64(1, DATA_TYPE[v.type]).message(2, shape);
  return new ProtoWriter().string(1, v.name).message(2, new ProtoWriter().message(1, tensorType));
}

function attributeProto(name: string, a: Attr): ProtoWriter {
  const p = new ProtoWriter().string(1, name);
  switch (a.kind) {
    case 'float':
      p.float(2, a.value);
      break;
    case 'int':
      p.int64(3, a.value);
      break;
    case 'string':
      p.string(4, a.value);
      break;
    case 'floats':
      for (const v of a.value) p.float(7, v);
      break;
    case 'ints':
      p.packedInt64(8, a.value);
      break;
  }
  return p.int64(20, ATTR_TYPE[a.kind]);
}

export class OnnxGraph {
  private readonly nodes: Node[] = [];
  private readonly inputs: ValueInfo[] = [];
  private readonly outputs: ValueInfo[] = [];
  private readonly initializers: Initializer[] = [];
  private readonly names = new Set<string>();
  private counter = 0;
  /** Small integer constants, shared by value (shapes, axes, slice bounds). */
  private readonly intConstants = new Map<string, string>();

  /** @param name The graph's name (shows in ONNX Runtime's errors and profiles). */
  constructor(readonly name: string) {}

  /** A fresh value name starting with `hint`. */
  private fresh(hint: string): string {
    let name = hint;
    while (this.names.has(name)) name = `${hint}_${this.counter++}`;
    this.names.add(name);
    return name;
  }

  /** Declares a graph input. */
  input(name: string, type: ElementType, dims: readonly Dim[]): string {
    if (this.names.has(name)) throw new Error(`ONNX graph ${this.name}: the name "${name}" is already used`);
    this.names.add(name);
    this.inputs.push({ name, type, dims });
    return name;
  }

  /** A constant tensor (an initializer), named after `hint`. `data` is referenced, not copied. */
  constant(hint: string, data: TensorData, dims: readonly number[]): string {
    const size = dims.reduce((a, b) => a * b, 1);
    if (size !== data.length) throw new Error(`ONNX graph ${this.name}: constant "${hint}" has ${data.length} values for shape [${dims.join(', ')}]`);
    const name = this.fresh(hint);
    this.initializers.push({ name, type: elementTypeOf(data), dims: [...dims], data });
    return name;
  }

  /** A 1-D int64 constant (shapes, axes, slice bounds), shared between uses of the same values. */
  ints(values: readonly number[]): string {
    const key = values.join(',');
    let name = this.intConstants.get(key);
    if (name === undefined) {
      name = this.constant('ints', BigInt64Array.from(values.map((v) => BigInt(v))), [values.length]);
      this.intConstants.set(key, name);
    }
    return name;
  }

  /** A float32 scalar constant. */
  scalar(value: number): string {
    return this.constant('scalar', Float32Array.of(value), []);
  }

  /** A node with several outputs; returns their names. An empty input name is an omitted optional input. */
  nodeN(op: string, inputs: readonly string[], nOutputs: number, attrs: Readonly<Record<string, Attr>> = {}): string[] {
    for (const i of inputs) if (i !== '' && !this.names.has(i)) throw new Error(`ONNX graph ${this.name}: ${op} reads "${i}", which is not defined`);
    const outputs = Array.from({ length: nOutputs }, () => this.fresh(op.toLowerCase()));
    this.nodes.push({ op, inputs: [...inputs], outputs, attrs });
    return outputs;
  }

  /** A node with one output; returns its name. */
  op(op: string, inputs: readonly string[], attrs: Readonly<Record<string, Attr>> = {}): string {
    return this.nodeN(op, inputs, 1, attrs)[0]!;
  }

  /** Declares `value` as the graph output `name` (through an Identity when the names differ). */
  output(name: string, value: string, type: ElementType, dims: readonly Dim[]): void {
    if (!this.names.has(value)) throw new Error(`ONNX graph ${this.name}: output "${name}" reads "${value}", which is not defined`);
    if (value !== name) {
      if (this.names.has(name)) throw new Error(`ONNX graph ${this.name}: the name "${name}" is already used`);
      this.names.add(name);
      this.nodes.push({ op: 'Identity', inputs: [value], outputs: [name], attrs: {} });
    }
    this.outputs.push({ name, type, dims });
  }

  /** The serialized ModelProto. */
  toModel(producer = 'sae-eraser'): Uint8Array {
    const graph = new ProtoWriter();
    this.nodes.forEach((n, i) => {
      const node = new ProtoWriter();
      for (const input of n.inputs) node.string(1, input);
      for (const output of n.outputs) node.string(2, output);
      node.string(3, `${n.op}_${i}`).string(4, n.op);
      for (const [name, a] of Object.entries(n.attrs)) node.message(5, attributeProto(name, a));
      graph.message(1, node);
    });
    graph.string(2, this.name);
    for (const t of this.initializers) graph.message(5, tensorProto(t));
    for (const v of this.inputs) graph.message(11, valueInfoProto(v));
    for (const v of this.outputs) graph.message(12, valueInfoProto(v));
    return new ProtoWriter().int64(1, IR_VERSION).string(2, producer).message(7, graph).message(8, new ProtoWriter().string(1, '').int64(2, OPSET)).finish();
  }
}
