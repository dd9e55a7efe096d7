import { create, equals, type MessageInitShape } from "@bufbuild/protobuf";
import { type ConfigSnapshot, ConfigSnapshotSchema } from "../../gen/aigw/v1/ingest_pb.js";

type SnapshotFields = Omit<MessageInitShape<typeof ConfigSnapshotSchema>, "version" | "$typeName">;

/**
 * The config snapshot sidecars hold, versioned. Parts of the control plane (routing,
 * budgets, limits) each update their fields; a change bumps the version and reaches every
 * connected sidecar, an update that changes nothing is no new version. Versions start at
 * the start time in ms, so they keep increasing across restarts.
 */
export class SnapshotPublisher {
  private current: ConfigSnapshot;
  private readonly listeners = new Set<(s: ConfigSnapshot) => void>();

  constructor(initial: SnapshotFields, startVersion: bigint = BigInt(Date.now())) {
    this.current = create(ConfigSnapshotSchema, { ...initial, version: startVersion });
  }

  get snapshot(): ConfigSnapshot {
    return this.current;
  }

  update(fields: SnapshotFields): void {
    const { $typeName: _, ...held } = this.current;
    const next = create(ConfigSnapshotSchema, { ...held, ...fields });
    if (equals(ConfigSnapshotSchema, next, this.current)) return;
    next.version = this.current.version + 1n;
    this.current = next;
    for (const l of this.listeners) l(next);
  }

  /** Calls `listener` on every new version; returns the unsubscribe function. */
  subscribe(listener: (s: ConfigSnapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
