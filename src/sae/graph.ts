/**
 * An SAE's encoder and decoder as ONNX nodes, for ONNX Runtime passes (activation caching,
 * evaluation); the same math as `AffineSae` (src/sae/sae.ts), read from its weights:
 *   f(x)    = act( (x - s b_dec) W_enc + b_enc ),   xHat = f W_dec + b_dec,   error = x - xHat.
 * TopK keeps the k largest of max(0, h) per token (ONNX TopK, then a scatter back into place);
 * ties at the k-th value are broken by position here and kept in `topkMask`, which differ only
 * on exactly equal float pre-activations.
 */
import { valuesOf } from '../models/graphs.js';
import { int, type OnnxGraph } from '../onnx/graph.js';
import { AffineSae, type Sae } from './sae.js';

/** Whether `saeNodes` can express this SAE (every SAE the loaders return is an `AffineSae`). */
export function hasGraph(sae: Sae): sae is AffineSae {
  return sae instanceof AffineSae;
}

/**
 * Adds the SAE to `g` for tokens `x [N, dIn]`: returns the codes `[N, dSae]`, the reconstruction
 * and the error `[N, dIn]` (the decoder is added only when `decode` is true), and `decodeNodes`,
 * which decodes any codes `[M, dSae]` with the same weights (e.g. mean-pooled codes: decoding is
 * affine, so it commutes with mean pooling).
 */
export function saeNodes(
  g: OnnxGraph,
  sae: Sae,
  x: string,
  decode = true,
): { codes: string; decodeNodes: (f: string) => string; reconstruction?: string; error?: string } {
  if (!hasGraph(sae)) throw new Error(`${sae.metadata.source}: this SAE type has no ONNX form; run it with the tfjs executor`);
  const { dIn, dSae } = sae;
  // Added only where used: ONNX Runtime warns about unused initializers.
  let bDecValue: string | undefined;
  const bDec = (): string => (bDecValue ??= g.constant('sae_b_dec', valuesOf(sae.bDec), [dIn]));
  const centred = sae.subtractDecoderBiasFromInput ? g.op('Sub', [x, bDec()]) : x;
  const h = g.op('Add', [
    g.op('MatMul', [centred, g.constant('sae_w_enc', valuesOf(sae.wEnc), [dIn, dSae])]),
    g.constant('sae_b_enc', valuesOf(sae.bEnc), [dSae]),
  ]);
  const act = sae.activation;
  let codes: string;
  switch (act.kind) {
    case 'relu':
      codes = g.op('Relu', [h]);
      break;
    case 'jumprelu': {
      const over = g.op('Greater', [h, g.constant('sae_threshold', valuesOf(act.threshold), [dSae])]);
      codes = g.op('Relu', [g.op('Where', [over, h, g.scalar(0)])]);
      break;
    }
    case 'topk': {
      const [top, where] = g.nodeN('TopK', [h, g.ints([act.k])], 2, { axis: int(-1), largest: int(1), sorted: int(0) });
      const kept = g.op('Relu', [top!]);
      codes = g.op('ScatterElements', [g.op('ConstantOfShape', [g.op('Shape', [h])]), where!, kept], { axis: int(-1) });
      break;
    }
  }
  let wDec: string | undefined;
  const decodeNodes = (f: string): string => g.op('Add', [g.op('MatMul', [f, (wDec ??= g.constant('sae_w_dec', valuesOf(sae.wDec), [dSae, dIn]))]), bDec()]);
  if (!decode) return { codes, decodeNodes };
  const reconstruction = decodeNodes(codes);
  return { codes, decodeNodes, reconstruction, error: g.op('Sub', [x, reconstruction]) };
}
