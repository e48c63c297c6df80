// Lint: typed rules for src and tests; generated code is ignored; the import order of the
// roles and of the server's areas (docs/architecture.md) is enforced here.
import tseslint from 'typescript-eslint';
import importX, { createNodeResolver } from 'eslint-plugin-import-x';

/**
 * The server's areas from the bottom of the stack up: an area imports only from areas before it
 * (and from common/, gen/ and the leaf server/metrics.ts). Folders listed here that do not exist
 * yet are places kept for the subsystems to come.
 */
const AREAS = [
  'options',
  'store',
  'crypto',
  'tls',
  'api',
  'auth',
  'workers',
  'secrets',
  'audit',
  'tasks',
  'admin',
  'cluster',
  'privacy',
  'incidents',
];
/** The composition files at the top of server/: no area imports them. */
const TOP = ['main.ts', 'server.ts', 'server-options.ts'].map((f) => `./server/${f}`);

const layerZones = AREAS.map((area, i) => ({
  target: `./server/${area}`,
  from: [...AREAS.slice(i + 1).map((a) => `./server/${a}`), ...TOP],
  message: `server/${area}/ sits below this area: see the map in docs/architecture.md.`,
}));
// options/ and store/ are the bottom of the server: they import nothing of server/ outside
// themselves.
layerZones[0].from.push('./server/metrics.ts');
layerZones[1].from.push('./server/metrics.ts');

// metrics.ts is a leaf: it imports no area and no top file.
layerZones.push({
  target: './server/metrics.ts',
  from: [...AREAS.map((a) => `./server/${a}`), ...TOP],
  message: 'server/metrics.ts is a leaf that areas import; it imports none of them.',
});

const roleZones = [
  { target: './server', from: ['./agent', './cli', './web'] },
  { target: './agent', from: ['./server', './cli', './web'] },
  { target: './cli', from: ['./server', './agent', './web'] },
  { target: './web', from: ['./server', './agent', './cli'] },
  { target: './common', from: ['./server', './agent', './cli', './web'] },
].map((z) => ({ ...z, message: 'roles never import each other: share code through common/.' }));

export default tseslint.config(
  { ignores: ['gen/**', 'dist/**', 'node_modules/**', 'eslint.config.js'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'import-x': importX },
    settings: {
      // Sources import `./x.js` for `./x.ts` (ESM): resolve as TypeScript does, or the import
      // rules see no file and check nothing.
      'import-x/resolver-next': [
        createNodeResolver({
          extensions: ['.ts', '.js', '.json', '.node'],
          extensionAlias: { '.js': ['.ts', '.js'] },
        }),
      ],
    },
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
      'import-x/no-restricted-paths': ['error', { zones: [...layerZones, ...roleZones] }],
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
