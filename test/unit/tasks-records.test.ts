// Unit tests for a worker's report turned into the stored result record and back: the output,
// the message and the detail are sealed (a worker's words can echo the payload), only the
// reason from a fixed vocabulary stays readable; records from before keep working.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DecryptError, InvalidArgumentError } from '../../common/errors.js';
import { ExecutionState, FailureReason } from '../../gen/citadel/v1/execution.js';
import { Outcome, ReportResultRequest } from '../../gen/citadel/v1/worker_service.js';
import { generateKey, Keyring } from '../../server/crypto/sealer.js';
import { reportToResult } from '../../server/tasks/assignments.js';
import {
  executionToProto,
  reasonToProto,
  reasonToRecord,
  type ExecutionRecord,
  type ResultRecord,
} from '../../server/tasks/records.js';

const keyring = new Keyring(new Map([['dk1', generateKey()]]), 'dk1');
const ID = 't_9x2kq4m7c1hv8d3z-00000001-01';
const MARKER = 'leakmarker42';

function failedExecution(result: ResultRecord, id = ID): ExecutionRecord {
  return {
    id,
    taskId: id.slice(0, id.indexOf('-')),
    owner: 'admin',
    run: 1,
    attempt: 1,
    state: 'failed',
    fencingToken: 7,
    workerId: 'w_1',
    trigger: 'schedule',
    priority: 2,
    scheduledAt: 0,
    createdAt: 0,
    assignedAt: 1,
    startedAt: 2,
    endedAt: 3,
    timeoutMs: 1000,
    retry: { maxAttempts: 1, initialBackoffMs: 1, maxBackoffMs: 1, multiplier: 2, jitter: 0 },
    result,
  };
}

const report = (fields: Partial<ReportResultRequest>) =>
  ReportResultRequest.fromPartial({
    executionId: ID,
    fencingToken: 7,
    outcome: Outcome.OUTCOME_FAILED,
    ...fields,
  });

void describe('a worker report as a stored result', () => {
  void it('seals the message and detail; only the reason is plaintext; a reader gets all three', () => {
    const { state, result } = reportToResult(
      keyring,
      report({
        reason: FailureReason.FAILURE_REASON_START_REFUSED,
        message: `an old agent's words: ${MARKER}`,
        detail: `exec: "/bin/${MARKER}": no such file`,
      }),
    );
    assert.equal(state, 'failed');
    const stored = JSON.stringify(result);
    assert.ok(!stored.includes(MARKER), `the stored record holds the marker: ${stored}`);
    assert.equal(result.message, '');
    assert.equal(result.reason, 'start_refused');

    const out = executionToProto(keyring, failedExecution({ ...result, durationMs: 1 })).result!;
    assert.equal(out.message, `an old agent's words: ${MARKER}`);
    assert.equal(out.detail, `exec: "/bin/${MARKER}": no such file`);
    assert.equal(out.reason, FailureReason.FAILURE_REASON_START_REFUSED);
  });

  void it("binds the sealed words to the execution: another execution's record does not open them", () => {
    const { result } = reportToResult(keyring, report({ message: 'm', detail: 'd' }));
    const other = 't_9x2kq4m7c1hv8d3z-00000002-01';
    assert.throws(
      () => executionToProto(keyring, failedExecution({ ...result, durationMs: 1 }, other)),
      DecryptError,
    );
  });

  void it('stores no sealed words when the worker said nothing', () => {
    const { result } = reportToResult(keyring, report({ outcome: Outcome.OUTCOME_SUCCEEDED }));
    assert.equal(result.text, null);
    assert.equal(result.reason, undefined);
    const out = executionToProto(keyring, failedExecution({ ...result, durationMs: 1 })).result!;
    assert.equal(out.message, '');
    assert.equal(out.detail, '');
    assert.equal(out.reason, FailureReason.FAILURE_REASON_UNSPECIFIED);
  });

  void it('refuses a message or detail over 1024 characters, naming the field', () => {
    for (const field of ['message', 'detail'] as const) {
      assert.throws(
        () => reportToResult(keyring, report({ [field]: 'x'.repeat(1025) })),
        (err: unknown) => err instanceof InvalidArgumentError && err.message.startsWith(field),
      );
    }
  });

  void it('reads a record written before the words were sealed (plaintext message, no reason)', () => {
    const legacy = {
      output: null,
      stdoutTruncated: false,
      stderrTruncated: false,
      oomKilled: false,
      timedOut: false,
      message: 'exited with code 3',
      durationMs: 5,
    } satisfies ResultRecord;
    const out = executionToProto(keyring, failedExecution(legacy));
    assert.equal(out.state, ExecutionState.EXECUTION_STATE_FAILED);
    assert.equal(out.result!.message, 'exited with code 3');
    assert.equal(out.result!.detail, '');
    assert.equal(out.result!.reason, FailureReason.FAILURE_REASON_UNSPECIFIED);
  });
});

void describe('failure reasons as stored', () => {
  void it('are the short lower-case names, and map back', () => {
    assert.equal(reasonToRecord(FailureReason.FAILURE_REASON_IMAGE_MISSING), 'image_missing');
    assert.equal(reasonToProto('image_missing'), FailureReason.FAILURE_REASON_IMAGE_MISSING);
    assert.equal(reasonToRecord(FailureReason.FAILURE_REASON_RUNTIME_ERROR), 'runtime_error');
  });

  void it('leave out unspecified and unknown values (a newer agent), and read unknown names as unspecified', () => {
    assert.equal(reasonToRecord(FailureReason.FAILURE_REASON_UNSPECIFIED), undefined);
    assert.equal(reasonToRecord(FailureReason.UNRECOGNIZED), undefined);
    assert.equal(reasonToRecord(99 as FailureReason), undefined);
    assert.equal(reasonToProto('from_the_future'), FailureReason.FAILURE_REASON_UNSPECIFIED);
    assert.equal(reasonToProto(undefined), FailureReason.FAILURE_REASON_UNSPECIFIED);
  });
});
