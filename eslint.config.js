import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', '.venv-ref/', '.cache/', 'runs/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-empty': ['error', { allowEmptyCatch: false }],
    },
  },
  {
    // Spreading an array into a call passes every element as an argument and overflows the call
    // stack past ~10^5 elements; library and benchmark code handles data of any size.
    files: ['src/**/*.ts', 'bench/**/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: "CallExpression[callee.object.name='Math'][callee.property.name=/^(max|min)$/] > SpreadElement",
          message: 'Math.max/min(...array) overflows the stack on large arrays: use maxOf/minOf from src/util/arrays.ts.',
        },
        {
          selector: "CallExpression[callee.property.name='push'][arguments.length=1] > SpreadElement",
          message: 'push(...array) overflows the stack on large arrays: use pushAll from src/util/arrays.ts.',
        },
        {
          selector: "CallExpression[callee.property.name='fromCharCode'] > SpreadElement",
          message: 'String.fromCharCode(...array) overflows the stack on large arrays: decode with TextDecoder or in chunks.',
        },
      ],
    },
  },
);
