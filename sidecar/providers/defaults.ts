import type { ProviderAdapter } from "./adapter.js";
import { anthropicAdapter } from "./anthropic.js";
import { openAiAdapter } from "./openai.js";

/** The provider formats a sidecar observes unless told otherwise: OpenAI-compatible and Anthropic Messages. */
export const DEFAULT_ADAPTERS: readonly ProviderAdapter[] = [openAiAdapter, anthropicAdapter];
