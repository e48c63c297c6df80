// Lint: typed rules for src and tests; generated code is ignored.
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

export default tseslint.config(
  { ignores: ['gen/**', 'dist/**', 'node_modules/**', 'eslint.config.js'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'import-x': importX },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': [
        'error',
        { checksVoidReturn: { arguments: false } },
      ],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/only-throw-error': 'error',
      'import-x/no-cycle': 'error',
      'no-restricted-properties': [
        'error',
        { object: 'describe', property: 'only', message: 'No .only in tests.' },
        { object: 'it', property: 'only', message: 'No .only in tests.' },
        { object: 'test', property: 'only', message: 'No .only in tests.' },
      ],
    },
  },
  {
    // Tests pass generated client methods to a helper that calls them bound to their client.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/unbound-method': 'off',
      // A failing assert.ok without a message makes Node parse the test's source to word one:
      // under tsx that takes seconds to minutes with the event loop blocked, which starves the
      // in-process server and turns a retried check in `eventually` into a freeze.
      'no-restricted-syntax': [
        'error',
        {
          selector:
            "CallExpression[arguments.length=1]:matches([callee.name='assert'], [callee.object.name='assert'][callee.property.name='ok'])",
          message: 'Give assert.ok a message (without one, a failure blocks the event loop).',
        },
      ],
    },
  },
);
