/**
 * `npm run build:agent` (and `build:server`, `build:ctl`, `build:bins`): builds Citadel's
 * binaries as Node single-executable applications, offline, into dist/bin/. Each binary is the
 * running node executable with one CommonJS bundle of an entry point injected into it, so a host
 * needs neither Node nor node_modules. See docs/install.md.
 *
 *   node --import tsx scripts/build-sea.ts [--out-dir DIR] [--no-strip] [--no-code-cache]
 *     citadel-agent|citadel-server|citadelctl|all ...
 *
 * Steps per binary: esbuild bundle (the plugins below handle what a bundle cannot find on disk),
 * `node --experimental-sea-config`, copy and strip the node executable, postject the blob, then
 * run `<binary> --version` as a smoke test. Linux only (macOS would need codesign steps).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as esbuild from 'esbuild';
import { DESCRIPTOR_ASSET, DESCRIPTOR_PATH } from '../server/api/descriptor-set.js';

const run = promisify(execFile);
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const requireFromRepo = createRequire(path.join(REPO_ROOT, 'package.json'));

/** The binaries this script builds, by name, with their entry points. */
const BINARIES = {
  'citadel-agent': 'agent/main.ts',
  'citadel-server': 'server/main.ts',
  citadelctl: 'cli/main.ts',
} as const;
type BinaryName = keyof typeof BINARIES;

/** Node's SEA sentinel; fixed by Node (see the single-executable-applications docs). */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

/** Where an embedded file seems to live at run time; never a real path on any host. */
const EMBED_ROOT = '/$citadel-embedded';

/**
 * Packages that load .proto files from next to their own code when imported, and the folders
 * (inside the package) holding those files. Their `__dirname` is rewritten to a path under
 * EMBED_ROOT and the files are served from memory by the proto-loader shim below.
 */
const PROTO_PACKAGES: Record<string, string[]> = {
  etcd3: ['proto'],
  '@grpc/reflection': ['build/proto/grpc'],
  'grpc-health-check': ['proto'],
};

export interface BuildOptions {
  /** @default "<repo>/dist/bin" */
  outDir?: string;
  /** Strip symbols from the copied node executable first (about 10 MB smaller). @default true */
  strip?: boolean;
  /** Embed V8's code cache for the bundle (faster start). @default true */
  codeCache?: boolean;
}

export interface BuildResult {
  name: BinaryName;
  file: string;
  bytes: number;
  bundleBytes: number;
  ms: number;
}

/** Builds one binary; throws if any step fails or the result does not print the version. */
export async function buildBinary(
  name: BinaryName,
  options: BuildOptions = {},
): Promise<BuildResult> {
  const started = Date.now();
  const outDir = path.resolve(options.outDir ?? path.join(REPO_ROOT, 'dist/bin'));
  const version = await packageVersion();
  const work = path.join(outDir, `.${name}.build-${randomBytes(4).toString('hex')}`);
  await fs.mkdir(work, { recursive: true });
  try {
    const bundle = path.join(work, `${name}.cjs`);
    await bundleEntry(path.join(REPO_ROOT, BINARIES[name]), bundle, version);

    const blob = path.join(work, `${name}.blob`);
    const seaConfig = path.join(work, 'sea-config.json');
    await fs.writeFile(
      seaConfig,
      JSON.stringify({
        // Relative, so stack traces name `<name>.cjs` rather than this temporary folder.
        main: path.basename(bundle),
        output: path.basename(blob),
        disableExperimentalSEAWarning: true,
        useCodeCache: options.codeCache ?? true,
        // The server's descriptor set for reflection travels inside its executable.
        ...(name === 'citadel-server' && {
          assets: { [DESCRIPTOR_ASSET]: fileURLToPath(DESCRIPTOR_PATH) },
        }),
      }),
    );
    await run(process.execPath, ['--experimental-sea-config', seaConfig], { cwd: work });

    const binary = path.join(work, name);
    await fs.copyFile(process.execPath, binary);
    await fs.chmod(binary, 0o755);
    // Strip before injecting: strip on an injected binary leaves one that segfaults.
    if (options.strip ?? true) await stripSymbols(binary);
    await run(
      path.join(REPO_ROOT, 'node_modules/.bin/postject'),
      [binary, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE],
      { maxBuffer: 16 * 1024 * 1024 },
    );

    const { stdout } = await run(binary, ['--version'], {
      cwd: '/',
      env: { PATH: '/nonexistent' },
    });
    if (stdout.trim() !== version) {
      throw new Error(`${name} --version printed ${JSON.stringify(stdout)}, expected ${version}`);
    }
    const file = path.join(outDir, name);
    await fs.rename(binary, file); // atomic: a running test never sees half a binary
    return {
      name,
      file,
      bytes: (await fs.stat(file)).size,
      bundleBytes: (await fs.stat(bundle)).size,
      ms: Date.now() - started,
    };
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

async function stripSymbols(binary: string): Promise<void> {
  try {
    await run('strip', [binary]);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error('strip not found (Debian: apt-get install binutils), or pass --no-strip');
    }
    throw err;
  }
}

async function packageVersion(): Promise<string> {
  const pkg = JSON.parse(await fs.readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

async function bundleEntry(entry: string, outfile: string, version: string): Promise<void> {
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    logLevel: 'silent',
    legalComments: 'inline',
    define: {
      // common/version.ts prefers this to reading package.json, which a binary does not have.
      __CITADEL_VERSION__: JSON.stringify(version),
      // In a CommonJS bundle import.meta is empty; the executable's own URL is the closest
      // meaning (in a SEA, __filename is process.execPath).
      'import.meta.url': '__citadel_import_meta_url',
    },
    banner: {
      js: 'var __citadel_import_meta_url = require("url").pathToFileURL(__filename).href;',
    },
    plugins: [stubOptionalNativeModules(), embedProtoFiles()],
  });
  // A warning here (an unresolved optional require, import.meta, ...) is a binary that fails on
  // some code path at run time: refuse it.
  const problems = [...result.errors, ...result.warnings];
  if (problems.length > 0) {
    const text = await esbuild.formatMessages(problems, { kind: 'warning' });
    throw new Error(`bundling ${path.relative(REPO_ROOT, entry)}:\n${text.join('\n')}`);
  }
}

/**
 * ssh2 (pulled in by dockerode's docker-modem) loads its native `.node` addon and cpu-features,
 * and debug loads supports-color; all inside try/catch with a pure-JS fallback (and colours do
 * not matter in a daemon's log). A binary cannot carry addons, so these requires resolve to a
 * module that throws MODULE_NOT_FOUND, as if absent. Any other `.node` import still fails the
 * build: an addon required outside try/catch would fail the binary.
 */
function stubOptionalNativeModules(): esbuild.Plugin {
  const ssh2 = `${path.sep}node_modules${path.sep}ssh2${path.sep}`;
  return {
    name: 'citadel-stub-optional-native',
    setup(build) {
      build.onResolve({ filter: /^cpu-features$|^supports-color$|\.node$/ }, (args) =>
        args.path.endsWith('.node') && !args.importer.includes(ssh2)
          ? undefined
          : { path: args.path, namespace: 'citadel-stub' },
      );
      build.onLoad({ filter: /.*/, namespace: 'citadel-stub' }, (args) => ({
        contents: `const err = new Error(${JSON.stringify(`Cannot find module '${args.path}' (not in the single executable)`)});
err.code = 'MODULE_NOT_FOUND';
throw err;`,
        loader: 'js',
      }));
    },
  };
}

/**
 * etcd3, @grpc/reflection and grpc-health-check call proto-loader's `loadSync` on .proto files
 * next to their code when imported. This plugin rewrites `__dirname` in those packages to a
 * virtual folder, embeds their .proto files, and routes every `@grpc/proto-loader` import
 * through a shim whose `loadSync` reads embedded files from memory and otherwise defers to the
 * real one. The real proto-loader and protobufjs still parse, with the caller's options.
 */
function embedProtoFiles(): esbuild.Plugin {
  return {
    name: 'citadel-embed-protos',
    setup(build) {
      const packageDirs = Object.keys(PROTO_PACKAGES).map((pkg) => ({
        pkg,
        dir: path.dirname(requireFromRepo.resolve(`${pkg}/package.json`)),
      }));
      const protoLoaderDir = path.dirname(
        requireFromRepo.resolve('@grpc/proto-loader/package.json'),
      );

      build.onLoad({ filter: /\.js$/ }, async (args) => {
        const owner = packageDirs.find(({ dir }) => args.path.startsWith(dir + path.sep));
        if (owner === undefined) return undefined;
        const source = await fs.readFile(args.path, 'utf8');
        if (!source.includes('__dirname')) return undefined;
        const virtualDir = path.posix.join(
          EMBED_ROOT,
          owner.pkg,
          path.relative(owner.dir, path.dirname(args.path)).split(path.sep).join('/'),
        );
        return {
          contents: source.replaceAll('__dirname', JSON.stringify(virtualDir)),
          loader: 'js',
          resolveDir: path.dirname(args.path),
        };
      });

      build.onResolve({ filter: /^@grpc\/proto-loader$/ }, () => ({
        path: 'proto-loader-shim',
        namespace: 'citadel-embedded-protos',
      }));
      build.onLoad({ filter: /.*/, namespace: 'citadel-embedded-protos' }, async () => {
        const files: Record<string, string> = {};
        for (const { pkg, dir } of packageDirs) {
          for (const sub of PROTO_PACKAGES[pkg] ?? []) {
            for (const file of await protoFiles(path.join(dir, sub))) {
              const rel = path.relative(dir, file).split(path.sep).join('/');
              files[path.posix.join(EMBED_ROOT, pkg, rel)] = await fs.readFile(file, 'utf8');
            }
          }
        }
        return {
          contents: protoLoaderShim(files),
          loader: 'js',
          resolveDir: protoLoaderDir,
        };
      });
      // The shim's own `require('@grpc/proto-loader')` must reach the real package.
      build.onResolve({ filter: /^@grpc\/proto-loader-real$/ }, () => ({
        path: requireFromRepo.resolve('@grpc/proto-loader'),
      }));
    },
  };
}

async function protoFiles(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith('.proto'))
    .map((e) => path.join(e.parentPath, e.name))
    .sort();
}

function protoLoaderShim(files: Record<string, string>): string {
  return `'use strict';
const path = require('path');
const real = require('@grpc/proto-loader-real');
const protobuf = require('protobufjs');
const FILES = ${JSON.stringify(files)};

function embeddedPath(filename, includeDirs) {
  const candidates = path.isAbsolute(filename)
    ? [path.posix.normalize(filename)]
    : (includeDirs || []).map((dir) => path.posix.join(dir, filename));
  return candidates.find((p) => Object.prototype.hasOwnProperty.call(FILES, p));
}

function loadSync(filename, options) {
  const file = typeof filename === 'string' ? embeddedPath(filename, options && options.includeDirs) : undefined;
  if (file === undefined) return real.loadSync(filename, options);
  const diskFs = protobuf.util.fs;
  protobuf.util.fs = {
    readFileSync(p, ...rest) {
      const key = path.posix.normalize(p);
      if (Object.prototype.hasOwnProperty.call(FILES, key)) return Buffer.from(FILES[key]);
      return diskFs.readFileSync(p, ...rest);
    },
  };
  try {
    // Imports resolve relative to the embedded file, so include folders are not needed.
    return real.loadSync(file, { ...options, includeDirs: undefined });
  } finally {
    protobuf.util.fs = diskFs;
  }
}

module.exports = { ...real, loadSync };
`;
}

function parseArgs(argv: string[]): { names: BinaryName[]; options: BuildOptions } {
  const options: BuildOptions = {};
  const names: BinaryName[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--out-dir') {
      const dir = argv[++i];
      if (dir === undefined) throw new Error('--out-dir needs a folder');
      options.outDir = dir;
    } else if (arg === '--no-strip') {
      options.strip = false;
    } else if (arg === '--no-code-cache') {
      options.codeCache = false;
    } else if (arg === 'all') {
      names.push(...(Object.keys(BINARIES) as BinaryName[]));
    } else if (arg in BINARIES) {
      names.push(arg as BinaryName);
    } else {
      throw new Error(
        `unknown argument ${arg}; binaries: ${Object.keys(BINARIES).join(', ')}, all`,
      );
    }
  }
  if (names.length === 0) throw new Error('name at least one binary, or all');
  return { names, options };
}

async function main(): Promise<void> {
  const { names, options } = parseArgs(process.argv.slice(2));
  // One at a time: each step is CPU-bound and the binaries are 90+ MB each.
  for (const name of new Set(names)) {
    const r = await buildBinary(name, options);
    const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
    process.stdout.write(
      `${path.relative(process.cwd(), r.file)}: ${mib(r.bytes)} (bundle ${mib(r.bundleBytes)}) in ${(r.ms / 1000).toFixed(1)} s\n`,
    );
  }
}

if (
  process.argv[1] !== undefined &&
  path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)
) {
  main().catch((err: unknown) => {
    process.stderr.write(`build-sea: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
