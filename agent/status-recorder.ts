/**
 * Keeps `status.json` current for `citadel-agent status`: rewritten (atomically) after every
 * successful heartbeat and once more when the agent stops. A write that fails is logged once
 * until one succeeds again; it never stops the agent.
 */
import type { Logger } from '../common/logger.js';
import type { WorkerIdentity } from './identity.js';
import { type AgentStatus, type DataPaths, writeAgentStatus } from './state.js';

/** Writes status.json for one worker. */
export class StatusRecorder {
  #last: AgentStatus | undefined;
  #errorLogged = false;

  constructor(
    private readonly paths: DataPaths,
    private readonly workerId: string,
    private readonly logger: Logger,
  ) {}

  /** Records a heartbeat accepted by `server` now. */
  heartbeat(server: string, identity: WorkerIdentity, state: string): Promise<void> {
    return this.#write({
      workerId: this.workerId,
      server,
      lastHeartbeatAt: new Date().toISOString(),
      certificateSerial: identity.serial,
      certificateNotAfter: identity.notAfter.toISOString(),
      state,
    });
  }

  /** Records that the agent stopped, keeping the last heartbeat (if there was one). */
  async stopped(identity: WorkerIdentity): Promise<void> {
    if (this.#last === undefined) return;
    await this.#write({
      ...this.#last,
      certificateSerial: identity.serial,
      certificateNotAfter: identity.notAfter.toISOString(),
      state: 'stopped',
    });
  }

  async #write(status: AgentStatus): Promise<void> {
    this.#last = status;
    try {
      await writeAgentStatus(this.paths, status);
      this.#errorLogged = false;
    } catch (err) {
      if (!this.#errorLogged) this.logger.warn({ err }, 'status not written');
      this.#errorLogged = true;
    }
  }
}
