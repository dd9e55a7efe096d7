import type { MessagePort } from "node:worker_threads";
import type { AttemptResult } from "./retry-policy.js";

/**
 * What the main thread hands a delivery worker for one attempt. Plain data only: it is
 * structured-cloned into a worker thread.
 */
export interface DeliveryTask {
  deliveryId: string;
  url: string;
  /** The JSON body, rendered once on the main thread; signed and sent byte for byte. */
  body: string;
  /** The event id: webhook-id, the same on every attempt. */
  webhookId: string;
  /** Secrets of the endpoint's valid keys (newest first); one signature each. */
  secrets: string[];
  /** security.signature_header: the signature is sent again under this name. */
  signatureHeader: string;
  /** Bound on the whole exchange: connect, headers and body. */
  timeoutMs: number;
  requireHttps: boolean;
  allowedNetworks: string[];
  userAgent: string;
}

export type DeliveryResult = AttemptResult;

/** One endpoint's part of a batch: sent once, however many of the batch's deliveries go there. */
export interface BatchDestination {
  url: string;
  secrets: string[];
}

/**
 * One attempt in a batch: the stored event as the store holds it (protobuf). The worker
 * decodes it and renders the webhook body, so the main thread never does, and the bytes
 * signed are rendered the same way on every attempt (common/webhook-body.ts).
 */
export interface BatchItem {
  /** Index into DeliveryBatch.destinations. */
  destination: number;
  event: Uint8Array;
}

/**
 * Several attempts in one worker task: a worker round trip costs far more main-thread CPU
 * than the bookkeeping of one delivery, so claimed deliveries travel together. Settings
 * shared by every attempt, and each endpoint's URL and secrets, are sent once.
 */
export interface DeliveryBatch {
  destinations: BatchDestination[];
  items: BatchItem[];
  signatureHeader: string;
  timeoutMs: number;
  requireHttps: boolean;
  allowedNetworks: string[];
  userAgent: string;
}

/**
 * What crosses into the worker: the batch and the port its results come back on. Each
 * result is posted as soon as its attempt ends, so a hanging receiver in a batch holds
 * back only its own result, never the recording of the others.
 */
export interface DeliveryBatchMessage extends DeliveryBatch {
  results: MessagePort;
}

/**
 * One message on a batch's result port: the attempts that ended in the same worker
 * event-loop turn, as [item index, result] pairs.
 */
export type BatchResults = [index: number, result: DeliveryResult][];
