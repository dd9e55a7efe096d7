// C0 control characters and DEL: never part of a name, an id or a one-line message.
const CONTROL = /[\u0000-\u001f\u007f]/;
const CONTROL_RUNS = /[\u0000-\u001f\u007f]+/g;

export function hasControlCharacter(text: string): boolean {
  return CONTROL.test(text);
}

/** `text` on one line: each run of control characters becomes one space. */
export function withoutControlCharacters(text: string): string {
  return text.replace(CONTROL_RUNS, " ");
}
