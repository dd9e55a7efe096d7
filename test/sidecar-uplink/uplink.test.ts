import { appendFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import type { ConfigSnapshot } from "../../gen/aigw/v1/ingest_pb.js";
import { sidecarReadiness } from "../../sidecar/admin/admin-server.js";
import type { Uplink, UplinkOptions } from "../../sidecar/uplink/uplink.js";
import { FakeControlPlane, type ReceivedBatch, unusedPort, waitFor } from "./fake-control-plane.js";
import { CapturedLog, completionEvent, spoolDirIn, streamingEvent, temporaryDir, testUplink } from "./helpers.js";

let dir: { path: string; remove: () => Promise<void> };
let log: CapturedLog;
let uplinks: Uplink[] = [];
let planes: FakeControlPlane[] = [];

beforeEach(async () => {
  dir = await temporaryDir();
  log = new CapturedLog();
});

afterEach(async () => {
  // Client first: an h2c server's close() waits for its client sessions.
  for (const uplink of uplinks) await uplink.close();
  for (const plane of planes) await plane.stop();
  uplinks = [];
  planes = [];
  await dir.remove();
});

async function controlPlane(port = 0): Promise<FakeControlPlane> {
  const plane = new FakeControlPlane();
  await plane.start(port);
  planes.push(plane);
  return plane;
}

function uplinkTo(target: string, options: Partial<UplinkOptions> = {}): Uplink {
  const uplink = testUplink(target, dir.path, log.logger, options);
  uplinks.push(uplink);
  return uplink;
}

function publishMany(uplink: Uplink, count: number, make: (i: number) => Event = () => completionEvent()): string[] {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const event = make(i);
    ids.push(event.id);
    uplink.publish(event);
  }
  return ids;
}

/** Per stream, the seqs arrived strictly increasing. */
function expectOrderedPerStream(batches: ReceivedBatch[]): void {
  const lastByStream = new Map<number, number>();
  for (const batch of batches) {
    expect(batch.seq).toBeGreaterThan(lastByStream.get(batch.streamNumber) ?? 0);
    lastByStream.set(batch.streamNumber, batch.seq);
  }
}

/** Every re-send of a seq carried exactly the same events. */
function expectStableBatches(batches: ReceivedBatch[]): void {
  const bySeq = new Map<number, string[]>();
  for (const batch of batches) {
    const seen = bySeq.get(batch.seq);
    if (seen) expect(batch.eventIds).toEqual(seen);
    else bySeq.set(batch.seq, batch.eventIds);
  }
}

/** First occurrences of each event id, in arrival order. */
function uniqueInArrivalOrder(ids: string[]): string[] {
  return [...new Set(ids)];
}

describe("Uplink", () => {
  it("delivers published events in order, in few seq-numbered batches, and they are acked", async () => {
    const plane = await controlPlane();
    const uplink = uplinkTo(plane.target, { sidecarId: "sc_fixed" });
    await uplink.start();
    const ids = publishMany(uplink, 1000);
    await uplink.flush();

    expect(plane.storedEventIds()).toEqual(ids);
    expect(plane.batches.map((b) => b.seq)).toEqual(plane.batches.map((_, i) => i + 1));
    expect(plane.batches.length).toBeLessThanOrEqual(8);
    expect(plane.hellos[0]).toMatchObject({
      sidecarId: "sc_fixed",
      orgId: "org_test",
      app: "app-test",
      version: "0.1.0-test",
      configVersion: 0n,
    });
    const stats = uplink.stats();
    expect(stats).toMatchObject({ connected: true, pendingBatches: 0, dropped: 0, bufferedEvents: 0 });
    expect(stats.ackedSeq).toBe(plane.batches.length);
    expect(stats.sentBatches).toBe(plane.batches.length);
  });

  it("sends at once when nothing is in flight, and gathers while a batch is (adaptive linger)", async () => {
    const plane = await controlPlane();
    // A linger far longer than the test's bounds: only the adaptive path can be this quick.
    const uplink = uplinkTo(plane.target, { batchMaxDelayMs: 60_000, spoolAfterMs: 60_000 });
    await uplink.start();
    await waitFor(() => uplink.stats().connected, "connected");

    const lone = completionEvent();
    uplink.publish(lone);
    await uplink.flush({ timeoutMs: 10_000 });
    expect(plane.storedEventIds()).toEqual([lone.id]);

    // While a batch waits for its ack, later events gather; the ack sends them as one batch.
    plane.holdAcks = true;
    const first = completionEvent();
    uplink.publish(first);
    await waitFor(() => plane.batches.length === 2, "the second batch in flight");
    const gathered = publishMany(uplink, 30);
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(plane.batches.length).toBe(2);
    plane.holdAcks = false;
    plane.ackReceived();
    await uplink.flush({ timeoutMs: 10_000 });
    expect(plane.batches.length).toBe(3);
    expect(plane.batches[2]?.eventIds).toEqual(gathered);
    // Nothing went to disk: every ack came before the spool threshold.
    expect(uplink.stats()).toMatchObject({ spooledBytes: 0, spooledEvents: 0, queuedEvents: 0 });
  });

  it("flush() resolves only once the control plane has acked, and times out clearly otherwise", async () => {
    const plane = await controlPlane();
    plane.holdAcks = true;
    const uplink = uplinkTo(plane.target);
    await uplink.start();
    publishMany(uplink, 3);

    await expect(uplink.flush({ timeoutMs: 300 })).rejects.toThrow(/flush timed out after 300 ms: acked seq 0 of 1/);
    let flushed = false;
    const flushing = uplink.flush({ timeoutMs: 20_000 }).then(() => {
      flushed = true;
    });
    await waitFor(() => plane.batches.length === 1, "the batch to arrive");
    await new Promise((resolve) => setImmediate(resolve));
    expect(flushed).toBe(false);
    expect(uplink.stats().pendingBatches).toBe(1);

    plane.ackReceived();
    await flushing;
    expect(flushed).toBe(true);
    expect(uplink.stats().ackedSeq).toBe(1);
  });

  it("spools while the control plane is down and delivers everything, in order, once it is up", async () => {
    const port = await unusedPort();
    const uplink = uplinkTo(`http://127.0.0.1:${port}`);
    await uplink.start();
    const ids: string[] = [];
    for (let round = 0; round < 3; round++) {
      ids.push(...publishMany(uplink, 100));
      await waitFor(() => uplink.stats().bufferedEvents === 0, "events sealed into the spool");
    }
    await waitFor(() => uplink.stats().connectAttempts >= 3, "several connect attempts");
    const stats = uplink.stats();
    expect(stats.connected).toBe(false);
    expect(stats.ackedSeq).toBe(0);
    expect(stats.pendingBatches).toBeGreaterThanOrEqual(3);
    expect(stats.spooledBytes).toBeGreaterThan(0);
    expect(stats.dropped).toBe(0);
    expect(log.has("control plane unreachable")).toBe(true);

    const plane = await controlPlane(port);
    await uplink.flush();
    expect(plane.storedEventIds()).toEqual(ids);
    expectOrderedPerStream(plane.batches);
    await waitFor(() => uplink.stats().spooledBytes === 0, "acked segments deleted");
  });

  it("re-sends unacked batches after the control plane restarts mid-stream; nothing is lost", async () => {
    const first = await controlPlane();
    const port = first.port;
    const uplink = uplinkTo(first.target, { batchMaxEvents: 10 });
    await uplink.start();
    const ids = publishMany(uplink, 50);
    await uplink.flush();

    first.holdAcks = true;
    ids.push(...publishMany(uplink, 50));
    await waitFor(() => first.storedEventIds().length === 100, "the unacked batches to arrive");
    const ackedBeforeCrash = uplink.stats().ackedSeq;
    await first.stop();
    planes = planes.filter((p) => p !== first);
    ids.push(...publishMany(uplink, 50));
    await waitFor(() => uplink.stats().bufferedEvents === 0, "events sealed while down");

    const second = await controlPlane(port);
    await uplink.flush();
    const resent = second.batches.map((b) => b.seq);
    // Exactly the unacked batches came again, first, in order, then the new ones.
    expect(resent[0]).toBe(ackedBeforeCrash + 1);
    expect(resent).toEqual(resent.map((_, i) => ackedBeforeCrash + 1 + i));
    const all = [...first.batches, ...second.batches];
    expectStableBatches(all);
    expectOrderedPerStream(second.batches);
    expect(uniqueInArrivalOrder(all.flatMap((b) => b.eventIds))).toEqual(ids);
  });

  it("reconnects when the control plane ends the stream", async () => {
    const plane = await controlPlane();
    plane.endStreamAfterBatches = 2;
    const uplink = uplinkTo(plane.target, { batchMaxEvents: 10 });
    await uplink.start();
    const ids: string[] = [];
    for (let round = 0; round < 5; round++) {
      ids.push(...publishMany(uplink, 20));
      await waitFor(() => uplink.stats().bufferedEvents === 0, "events sealed");
    }
    await uplink.flush();
    expect(plane.streams).toBeGreaterThan(2);
    expectStableBatches(plane.batches);
    expect(uniqueInArrivalOrder(plane.storedEventIds())).toEqual(ids);
  });

  it("drops a stream whose batches go unacked too long and re-sends them on a new one", async () => {
    const plane = await controlPlane();
    plane.holdAcks = true;
    const uplink = uplinkTo(plane.target, { ackTimeoutMs: 300 });
    await uplink.start();
    const ids = publishMany(uplink, 3);
    await waitFor(() => plane.batches.length === 1, "the batch to arrive");
    await waitFor(() => plane.streams >= 2 && plane.batches.length >= 2, "a new stream with the batch re-sent");
    expect(log.has("no ack from control plane in time")).toBe(true);
    plane.holdAcks = false;
    plane.ackReceived();
    await uplink.flush();
    expectStableBatches(plane.batches);
    expect(uniqueInArrivalOrder(plane.storedEventIds())).toEqual(ids);
  });

  it("keeps a stream whose acks wait for a full delivery queue, spooling meanwhile, and says why once", async () => {
    const plane = await controlPlane();
    plane.holdAcks = true;
    const uplink = uplinkTo(plane.target, { ackTimeoutMs: 300 });
    await uplink.start();
    const ids = publishMany(uplink, 3);
    await waitFor(() => plane.batches.length === 1, "the batch to arrive");
    // Told "paused" more often than the ack timeout, the stream stays: no reconnect, no re-send.
    const reminders = setInterval(() => plane.pushPaused(10, 10), 100);
    try {
      const until = Date.now() + 1_500;
      while (Date.now() < until) {
        ids.push(...publishMany(uplink, 1));
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } finally {
      clearInterval(reminders);
    }
    expect(plane.streams).toBe(1);
    expect(log.has("no ack from control plane in time")).toBe(false);
    expect(log.has("control plane paused ingest")).toBe(true);
    expect(uplink.stats().pendingBatches).toBeGreaterThan(1);
    plane.holdAcks = false;
    plane.ackReceived();
    await uplink.flush();
    expect(uniqueInArrivalOrder(plane.storedEventIds())).toEqual(ids);
  });

  it("an uplink restarted on the same spool re-sends unacked batches only, with the same sidecar id", async () => {
    const plane = await controlPlane();
    const before = uplinkTo(plane.target, { batchMaxEvents: 5 });
    await before.start();
    const ids = publishMany(before, 20);
    await before.flush();
    expect(before.stats().ackedSeq).toBe(4);

    plane.holdAcks = true;
    ids.push(...publishMany(before, 20));
    await waitFor(() => plane.batches.length === 8, "the unacked batches to arrive");
    await before.close();

    plane.holdAcks = false;
    const seen = plane.batches.length;
    const after = uplinkTo(plane.target, { batchMaxEvents: 5 });
    await after.start();
    expect(after.stats()).toMatchObject({ ackedSeq: 4, lastSeq: 8, pendingBatches: 4 });
    await after.flush();
    const resent = plane.batches.slice(seen);
    expect(resent.map((b) => b.seq)).toEqual([5, 6, 7, 8]);
    expectStableBatches(plane.batches);
    expect(uniqueInArrivalOrder(plane.storedEventIds())).toEqual(ids);
    expect(plane.hellos.length).toBe(2);
    expect(plane.hellos[1]?.sidecarId).toBe(plane.hellos[0]?.sidecarId);
    expect(plane.hellos[0]?.sidecarId).toMatch(/^sc_/);

    // Numbering goes on after the recovered batches.
    publishMany(after, 1);
    await after.flush();
    expect(plane.batches.at(-1)?.seq).toBe(9);
  });

  it("skips a torn tail in a segment file with a warning and delivers the rest", async () => {
    const port = await unusedPort();
    const before = uplinkTo(`127.0.0.1:${port}`);
    await before.start();
    const ids = publishMany(before, 30);
    await waitFor(() => before.stats().bufferedEvents === 0, "events sealed");
    await before.close();
    const spoolDir = spoolDirIn(dir.path);
    const segments = (await readdir(spoolDir)).filter((name) => name.startsWith("segment-")).sort();
    expect(segments.length).toBeGreaterThan(0);
    await appendFile(join(spoolDir, segments.at(-1)!), Buffer.from([0, 0, 1, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]));

    const plane = await controlPlane(port);
    const after = uplinkTo(plane.target);
    await after.start();
    await after.flush();
    expect(log.has("damaged segment tail skipped")).toBe(true);
    expect(plane.storedEventIds()).toEqual(ids);
  });

  it("drops an event protobuf would refuse on its own, with an error log; the events around it are delivered", async () => {
    const plane = await controlPlane();
    const uplink = uplinkTo(plane.target, { batchMaxEvents: 4 });
    await uplink.start();
    const before = publishMany(uplink, 3);
    const bad = completionEvent();
    if (bad.payload.case !== "completion") throw new Error("a completion event was expected");
    (bad.payload.value as { tokensUsed: number }).tokensUsed = -1;
    expect(() => uplink.publish(bad)).not.toThrow();
    const after = publishMany(uplink, 6);
    await uplink.flush();
    expect(plane.storedEventIds()).toEqual([...before, ...after]);
    expect(uplink.stats()).toMatchObject({ dropped: 1, bufferedEvents: 0 });
    expect(
      log.lines.some((line) => String(line.msg).includes("publish failed; event dropped") && line.level === 50),
    ).toBe(true);
  });

  it("counts drops when the spool is full and publish never throws", async () => {
    const port = await unusedPort();
    const uplink = uplinkTo(`127.0.0.1:${port}`, { maxSpoolBytes: 8 * 1024, batchMaxEvents: 16 });
    await uplink.start();
    const ids: string[] = [];
    for (let round = 0; round < 10; round++) {
      expect(() => ids.push(...publishMany(uplink, 100))).not.toThrow();
      await waitFor(() => uplink.stats().bufferedEvents === 0, "events sealed");
    }
    const stats = uplink.stats();
    expect(stats.dropped).toBeGreaterThan(0);
    expect(stats.spooledBytes).toBeLessThanOrEqual(8 * 1024);
    // No control plane and no room: /readyz says not ready, and why.
    expect(sidecarReadiness(uplink)).toEqual({
      ready: false,
      reason: expect.stringMatching(/no control plane connected and the spool is full/),
    });
    const dropWarnings = log.lines.filter((line) => String(line.msg).includes("events dropped"));
    // Rate-limited: one line for this burst, not one per event.
    expect(dropWarnings.length).toBe(1);
    expect(dropWarnings[0]?.level).toBe(40);

    const plane = await controlPlane(port);
    await uplink.flush();
    expect(sidecarReadiness(uplink)).toMatchObject({ ready: true });
    const delivered = plane.storedEventIds();
    expect(delivered.length + uplink.stats().dropped).toBe(ids.length);
    // What got through is an in-order prefix-free subsequence of what was published.
    const position = new Map(ids.map((id, i) => [id, i]));
    const positions = delivered.map((id) => position.get(id) ?? -1);
    expect(positions.every((p, i) => p >= 0 && (i === 0 || p > (positions[i - 1] ?? -1)))).toBe(true);
  });

  it("applies newer config snapshots only, sends what the proxy built, and says the held version in hello", async () => {
    const plane = await controlPlane();
    plane.configOnConnect = [{ version: 5n, wantedEventTypes: [EventType.COMPLETION] }];
    const applied: ConfigSnapshot[] = [];
    const uplink = uplinkTo(plane.target, { onConfig: (snapshot) => applied.push(snapshot) });
    await uplink.start();
    await waitFor(() => applied.length === 1, "the first snapshot");
    expect(applied[0]?.version).toBe(5n);

    // Which types to build is the proxy's decision (a request's own webhook URL gets its
    // events whatever the snapshot says); the uplink sends everything it is given.
    const completion = completionEvent();
    const first = streamingEvent(0);
    uplink.publish(first);
    uplink.publish(completion);
    await uplink.flush();
    expect(plane.storedEventIds()).toEqual([first.id, completion.id]);

    plane.pushConfig({ version: 3n, wantedEventTypes: [] });
    plane.pushConfig({ version: 7n, wantedEventTypes: [EventType.COMPLETION, EventType.STREAMING] });
    await waitFor(() => uplink.stats().configVersion === 7, "the newer snapshot");
    expect(applied.map((s) => s.version)).toEqual([5n, 7n]);
    expect(uplink.currentConfig()?.wantedEventTypes).toEqual([EventType.COMPLETION, EventType.STREAMING]);
    expect(log.has("not newer")).toBe(true);

    // A new stream says which version is held; the server's older snapshot is then ignored again.
    plane.endStreamAfterBatches = 1;
    const streaming = streamingEvent(1);
    uplink.publish(streaming);
    await waitFor(() => plane.hellos.length === 2, "a second hello");
    expect(plane.hellos[1]?.configVersion).toBe(7n);
    plane.endStreamAfterBatches = undefined;
    await uplink.flush();
    expect(plane.storedEventIds()).toContain(streaming.id);
    expect(uplink.stats().configVersion).toBe(7);
    expect(applied.length).toBe(2);
  });

  it("sends the token as bearer metadata, logs a refusal clearly, never logs the token, and retries", async () => {
    const plane = await controlPlane();
    plane.requiredToken = "the-right-one";
    const token = "tok_sidecar_4f9b2";
    const uplink = uplinkTo(plane.target, { token, authRetryInitialMs: 50, authRetryMaxMs: 200 });
    await uplink.start();
    const ids = publishMany(uplink, 5);
    await waitFor(() => log.has("refused this sidecar's token"), "the refusal to be logged");
    const refusal = log.lines.find((line) => String(line.msg).includes("refused"));
    expect(refusal).toMatchObject({ level: 50, code: "UNAUTHENTICATED" });
    expect(plane.batches).toEqual([]);
    expect(plane.authorizations[0]).toBe(`Bearer ${token}`);

    plane.requiredToken = token;
    await uplink.flush();
    expect(plane.storedEventIds()).toEqual(ids);
    expect(log.text.some((line) => line.includes(token))).toBe(false);
  });

  it("never throws from publish after close, and counts those events as dropped", async () => {
    const port = await unusedPort();
    const uplink = uplinkTo(`127.0.0.1:${port}`);
    await uplink.start();
    await uplink.close();
    expect(() => publishMany(uplink, 3)).not.toThrow();
    expect(uplink.stats().dropped).toBe(3);
    await expect(uplink.flush()).rejects.toThrow(/after close/);
  });
});
