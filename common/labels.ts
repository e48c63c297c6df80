/**
 * Labels (on tasks, workers and bootstrap tokens): one rule for their keys and values, shared
 * by every place that accepts them.
 */
import { InvalidArgumentError } from './errors.js';

const LABEL_KEY_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;

/**
 * Checks a label map: at most 32 labels, keys of 1-63 letters, digits, ".", "_", "/" or "-"
 * (starting with a letter or digit), values of at most 256 characters.
 * @throws InvalidArgumentError naming the bad label under `field`.
 */
export function validateLabels(
  labels: Record<string, string>,
  field = 'task.labels',
): Record<string, string> {
  const entries = Object.entries(labels);
  if (entries.length > 32) throw new InvalidArgumentError(field, 'at most 32 labels');
  for (const [k, v] of entries) {
    if (!LABEL_KEY_PATTERN.test(k)) {
      throw new InvalidArgumentError(
        `${field}[${JSON.stringify(k)}]`,
        'key must be 1-63 letters, digits, ".", "_", "/" or "-"',
      );
    }
    if (v.length > 256) {
      throw new InvalidArgumentError(
        `${field}[${JSON.stringify(k)}]`,
        'value is over 256 characters',
      );
    }
  }
  return { ...labels };
}
