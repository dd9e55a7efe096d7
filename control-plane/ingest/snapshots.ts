import { create, equals, type MessageInitShape } from "@bufbuild/protobuf";
import { type ConfigSnapshot, ConfigSnapshotSchema, type Hello } from "../../gen/aigw/v1/ingest_pb.js";

export type SnapshotFields = Omit<MessageInitShape<typeof ConfigSnapshotSchema>, "version" | "$typeName">;

/** The fields of a snapshot that differ per sidecar (its share of the gateway limits). */
export type Personalizer = (hello: Hello) => SnapshotFields;

/**
 * The config snapshot sidecars hold, versioned. Parts of the control plane (routing,
 * budgets, limits) each update their fields; a change bumps the version and reaches every
 * connected sidecar, an update that changes nothing is no new version. Versions come from
 * the store (`nextVersion`): every replica on one store hands out versions above every
 * earlier one, so a sidecar that moves to another replica (which only accepts newer
 * versions) never keeps a stale snapshot; they start above the clock in ms.
 *
 * Some fields are per sidecar (`personalize`): `snapshotFor(hello)` is the shared snapshot
 * with that sidecar's fields over it, at the same version. When what the personalizer
 * would answer changes (sidecars come and go), `bump()` makes a new version, so every
 * stream looks again; a stream sends only a snapshot whose content changed for its sidecar.
 */
export class SnapshotPublisher {
  private current: ConfigSnapshot;
  /** Content waiting for its version from the store. */
  private pending: ConfigSnapshot | undefined;
  private versioning = false;
  private readonly listeners = new Set<(s: ConfigSnapshot) => void>();
  private personalizer: Personalizer | undefined;

  constructor(
    initial: SnapshotFields,
    startVersion: bigint = BigInt(Date.now()),
    private readonly nextVersion?: () => Promise<bigint>,
  ) {
    this.current = create(ConfigSnapshotSchema, { ...initial, version: startVersion });
  }

  /** The shared snapshot (no per-sidecar fields). */
  get snapshot(): ConfigSnapshot {
    return this.current;
  }

  get version(): bigint {
    return this.current.version;
  }

  update(fields: SnapshotFields): void {
    const base = this.pending ?? this.current;
    const { $typeName: _, ...held } = base;
    const next = create(ConfigSnapshotSchema, { ...held, ...fields });
    if (equals(ConfigSnapshotSchema, next, base)) return;
    this.publish(next);
  }

  /** Sets the per-sidecar fields' source; streams look again. */
  personalize(personalizer: Personalizer): void {
    this.personalizer = personalizer;
    this.bump();
  }

  /** Per-sidecar fields changed: a new version, so every stream recomputes its snapshot. */
  bump(): void {
    const { $typeName: _, ...held } = this.pending ?? this.current;
    this.publish(create(ConfigSnapshotSchema, held));
  }

  /** The snapshot for one sidecar. */
  snapshotFor(hello: Hello): ConfigSnapshot {
    if (this.personalizer === undefined) return this.current;
    const { $typeName: _, ...held } = this.current;
    return create(ConfigSnapshotSchema, { ...held, ...this.personalizer(hello), version: this.current.version });
  }

  /** Calls `listener` on every new version; returns the unsubscribe function. */
  subscribe(listener: (s: ConfigSnapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private publish(next: ConfigSnapshot): void {
    if (this.nextVersion === undefined) {
      next.version = this.current.version + 1n;
      this.install(next);
      return;
    }
    // Changes made while a version is being fetched share the next one.
    this.pending = next;
    if (this.versioning) return;
    this.versioning = true;
    const source = this.nextVersion;
    void (async () => {
      while (this.pending !== undefined) {
        let version: bigint;
        try {
          version = await source();
        } catch {
          // The store is away: a local version still reaches this replica's sidecars.
          version = this.current.version + 1n;
        }
        const content = this.pending;
        this.pending = undefined;
        content.version = version > this.current.version ? version : this.current.version + 1n;
        this.install(content);
      }
      this.versioning = false;
    })();
  }

  private install(next: ConfigSnapshot): void {
    this.current = next;
    for (const l of this.listeners) l(next);
  }
}

/** Same content, whatever the versions. */
export function sameSnapshotContent(a: ConfigSnapshot, b: ConfigSnapshot): boolean {
  return equals(ConfigSnapshotSchema, { ...a, version: 0n }, { ...b, version: 0n });
}
