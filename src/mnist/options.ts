/**
 * Options of the MNIST digit erasure experiment (`sae-eraser mnist`), one strict zod schema with
 * every default named where it is declared. Unknown fields, wrong types and out-of-range values
 * fail before any work starts (`parseStrict`).
 */
import { z } from 'zod';
import { positiveInt } from '../util/schema.js';

/** The three learned-mask methods, in the order they run and are reported. */
export const MNIST_MASK_METHODS = ['sae_mask', 'neuron_mask', 'das_mask'] as const;
export type MnistMaskMethod = (typeof MNIST_MASK_METHODS)[number];

/** The original experiment's choice: erase 3-9, keep 0-2. */
export const DEFAULT_ERASED_DIGITS: readonly number[] = [3, 4, 5, 6, 7, 8, 9];

const digit = z.number().int().min(0).max(9);

const cnnSchema = z.strictObject({
  channels: positiveInt().default(32).describe('Convolution channels.'),
  hidden: positiveInt().default(128).describe('Width of the dense hidden layer (the layer the masks act on).'),
  epochs: positiveInt().default(8).describe('Passes over the training images.'),
  batchSize: positiveInt().default(64).describe('Images per Adam step.'),
  lr: z.number().positive().default(1e-3).describe('Adam learning rate.'),
  maxShift: z.number().int().min(0).max(4).default(1).describe('Random shift augmentation, in pixels along each axis (0: none).'),
});

const saeSchema = z.strictObject({
  dSae: positiveInt().default(512).describe('SAE features (4 x the hidden width by default).'),
  l1: z.number().min(0).default(0.1).describe('L1 coefficient of the ReLU SAE (src/sae/train.ts conventions).'),
  epochs: positiveInt().default(20).describe("Passes over the training split's hidden activations."),
  batchSize: positiveInt().default(256).describe('Rows per SAE step.'),
  lr: z.number().positive().default(1e-3).describe('Adam learning rate.'),
});

const maskSchema = z.strictObject({
  epochs: positiveInt().default(20).describe('Passes over the training split.'),
  batchSize: positiveInt().default(128).describe('Rows per mask step (kept and erased digits mixed).'),
  lr: z.number().positive().default(1e-2).describe('Adam learning rate of the gate logits (and of the DAS directions).'),
  tempStart: z.number().positive().default(0.1).describe('Gate temperature at the first step, annealed linearly to `tempEnd` (src/erasure/mask/gate.ts).'),
  tempEnd: z.number().positive().default(0.001).describe('Gate temperature at the last step.'),
  initKeep: z.number().gt(0).lt(1).default(0.99).describe('Initial gate of every unit: logits start at tempStart * logit(initKeep).'),
  dasRank: positiveInt()
    .default(32)
    .describe('das_mask only: learned directions k (at most the hidden width; k = width is the full rotation of the original DAS).'),
  dasInitNoise: z
    .number()
    .min(0)
    .default(0.05)
    .describe('das_mask only: multiplicative noise on the initial logits (with a uniform gate and k = width the directions get no gradient).'),
  eraseWeight: z.number().min(0).default(1).describe('Weight of the erasure term (cross-entropy to the uniform distribution minus log 10) on erased digits.'),
  l1: z.number().min(0).default(1e-3).describe('Cost of removed units, l1 * sum_j (1 - s_j), in loss units per unit.'),
});

const probeSchema = z.strictObject({
  epochs: positiveInt().default(20).describe('Passes of the fresh linear classifier over the (masked) training split.'),
  batchSize: positiveInt().default(128).describe('Rows per AdamW step.'),
  lr: z.number().positive().default(1e-2).describe('AdamW learning rate.'),
});

export const mnistOptionsSchema = z
  .strictObject({
    data: z.string().min(1).describe('Folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz.'),
    erase: z
      .array(digit)
      .min(1, { message: 'names no digit to erase' })
      .refine((d) => new Set(d).size === d.length, { message: 'lists a digit twice' })
      .refine((d) => new Set(d).size < 10, { message: 'erases every digit; at least one must be kept' })
      .default([...DEFAULT_ERASED_DIGITS])
      .describe('Digits to erase (the others are kept); at least one digit each.'),
    methods: z
      .array(z.enum(MNIST_MASK_METHODS))
      .min(1)
      .refine((m) => new Set(m).size === m.length, { message: 'lists a method twice' })
      .default([...MNIST_MASK_METHODS])
      .describe('Mask methods to run.'),
    seed: z.number().int().min(0).default(42).describe('Seed of the split, every initialisation and every batch order.'),
    trainSize: positiveInt().default(8000).describe('Images of the 10k set in the training split (the rest are the test split).'),
    trainExamples: positiveInt().optional().describe('Use only the first N training images (small runs); default all.'),
    testExamples: positiveInt().optional().describe('Use only the first N test images (small runs); default all.'),
    cnn: cnnSchema.default(cnnSchema.parse({})),
    sae: saeSchema.default(saeSchema.parse({})),
    mask: maskSchema.default(maskSchema.parse({})),
    probe: probeSchema.default(probeSchema.parse({})).describe('The fresh classifier of `erased_recoverability`.'),
  })
  .describe('MNIST digit erasure experiment.');

export type MnistOptions = z.output<typeof mnistOptionsSchema>;
export type MnistOptionsInput = z.input<typeof mnistOptionsSchema>;
export type MnistMaskOptions = MnistOptions['mask'];
