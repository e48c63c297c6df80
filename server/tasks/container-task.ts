/**
 * The built-in task type `container` (docs/dispatch.md): its payload names a local image, the
 * argv to run (never through a shell), environment variables and optional resource limits.
 * Checked on CreateTask and UpdateTask; turned into the ContainerSpec an assignment carries.
 */
import { InvalidArgumentError } from '../../common/errors.js';
import type { ContainerSpec } from '../../gen/citadel/v1/worker_service.js';

export const CONTAINER_TASK_TYPE = 'container';
export const DEFAULT_TASK_IMAGE = 'citadel/task-executor:latest';

/** A Docker image reference: [registry/]name[:tag][@digest], lowercase name components. */
const IMAGE_PATTERN =
  /^(?:[a-z0-9.-]+(?::\d+)?\/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Bounds of `resources` (Docker refuses memory under 6 MiB). */
const RESOURCE_BOUNDS = { memoryMb: [6, 65_536], cpus: [0.01, 64], pids: [1, 4096] } as const;

/**
 * The container spec of a `container` task's payload.
 * @throws InvalidArgumentError naming the payload field at fault.
 */
export function containerSpec(
  payload: Record<string, unknown> | undefined,
  field = 'task.payload',
): ContainerSpec {
  if (payload === undefined) {
    throw new InvalidArgumentError(field, 'is required for type "container": {"argv": [...]}');
  }
  for (const key of Object.keys(payload)) {
    if (!['image', 'argv', 'env', 'resources'].includes(key)) {
      throw new InvalidArgumentError(
        `${field}.${key}`,
        'is not a field of a container task (image, argv, env, resources)',
      );
    }
  }
  const image = payload.image ?? DEFAULT_TASK_IMAGE;
  if (typeof image !== 'string' || image.length > 255 || !IMAGE_PATTERN.test(image)) {
    throw new InvalidArgumentError(
      `${field}.image`,
      'must be a Docker image reference, e.g. "citadel/task-executor:latest"',
    );
  }
  const argv = payload.argv;
  if (
    !Array.isArray(argv) ||
    argv.length === 0 ||
    argv.length > 256 ||
    argv.some((a) => typeof a !== 'string' || a.length > 4096)
  ) {
    throw new InvalidArgumentError(
      `${field}.argv`,
      'must be 1 to 256 strings of at most 4096 characters: the program and its arguments',
    );
  }
  const env = payload.env ?? {};
  if (typeof env !== 'object' || env === null || Array.isArray(env)) {
    throw new InvalidArgumentError(`${field}.env`, 'must be an object of strings');
  }
  const entries = Object.entries(env as Record<string, unknown>);
  if (entries.length > 128) throw new InvalidArgumentError(`${field}.env`, 'at most 128 variables');
  for (const [k, v] of entries) {
    if (!ENV_NAME.test(k) || k.length > 128) {
      throw new InvalidArgumentError(`${field}.env`, `${JSON.stringify(k)} is not a variable name`);
    }
    if (typeof v !== 'string' || v.length > 32_768) {
      throw new InvalidArgumentError(
        `${field}.env.${k}`,
        'must be a string of at most 32768 characters',
      );
    }
  }
  return {
    image,
    argv: argv as string[],
    env: Object.fromEntries(entries) as Record<string, string>,
    ...resources(payload.resources, `${field}.resources`),
  };
}

/** The limits of a payload's `resources: {memoryMb?, cpus?, pids?}`; 0 for each left out. */
function resources(
  value: unknown,
  field: string,
): Pick<ContainerSpec, 'memoryBytes' | 'nanoCpus' | 'pidsLimit'> {
  const out = { memoryBytes: 0, nanoCpus: 0, pidsLimit: 0 };
  if (value === undefined) return out;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(field, 'must be an object: {"memoryMb", "cpus", "pids"}');
  }
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    if (!Object.hasOwn(RESOURCE_BOUNDS, key)) {
      throw new InvalidArgumentError(`${field}.${key}`, 'is not a resource (memoryMb, cpus, pids)');
    }
    const [min, max] = RESOURCE_BOUNDS[key as keyof typeof RESOURCE_BOUNDS];
    const whole = key !== 'cpus';
    if (typeof v !== 'number' || !(v >= min && v <= max) || (whole && !Number.isInteger(v))) {
      throw new InvalidArgumentError(
        `${field}.${key}`,
        `must be ${whole ? 'an integer' : 'a number'} from ${min} to ${max}`,
      );
    }
    if (key === 'memoryMb') out.memoryBytes = v * 1024 * 1024;
    else if (key === 'cpus') out.nanoCpus = Math.round(v * 1e9);
    else out.pidsLimit = v;
  }
  return out;
}
