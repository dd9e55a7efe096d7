import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import protobuf from "protobufjs";
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument, type Scalar, type YAMLMap } from "yaml";
import { REPO_ROOT } from "./processes.js";

// An Envoy config checked the way Envoy reads it: YAML → proto3 JSON of
// envoy.config.bootstrap.v3.Bootstrap, against Envoy's own API protos (shipped by the
// @grpc/grpc-js-xds package in deps/). Every field must exist in its message, every value
// must have its field's JSON type, every google.protobuf.Any (`typed_config`) is checked as
// the message its "@type" URL names, and the protoc-gen-validate rules Envoy enforces at
// load (required fields and oneofs, string lengths, numeric ranges, list sizes) hold. Deprecated fields are refused too: an
// example should not teach them. protobufjs parses the .proto files: it tolerates the
// vendored protoc-gen-validate being older than the Envoy API (which `buf build` does not).

const DEPS = join(REPO_ROOT, "node_modules/@grpc/grpc-js-xds/deps");
const INCLUDE = [
  join(DEPS, "envoy-api"),
  join(DEPS, "xds"),
  join(DEPS, "googleapis"),
  join(DEPS, "protoc-gen-validate"),
  // google/protobuf/descriptor.proto and friends.
  join(REPO_ROOT, "node_modules/protobufjs"),
];
const BOOTSTRAP = "envoy.config.bootstrap.v3.Bootstrap";

export interface EnvoyProblem {
  line: number;
  path: string;
  message: string;
}

/** Problems in an Envoy bootstrap YAML, each with its line and field path; [] when it is valid. */
export function checkEnvoyBootstrap(text: string): EnvoyProblem[] {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const problems: EnvoyProblem[] = [];
  for (const e of [...doc.errors, ...doc.warnings]) {
    problems.push({ line: lineCounter.linePos(e.pos[0]).line, path: "", message: e.message });
  }
  if (problems.length > 0 || !doc.contents) return problems;
  const root = loadEnvoyApi(typeUrls(doc.contents).map(typeNameOfUrl));
  new BootstrapChecker(root, lineCounter, problems).message(doc.contents, root.lookupType(BOOTSTRAP), "");
  return problems;
}

/** Bootstrap, and every package an "@type" names (all of its files), resolved. */
function loadEnvoyApi(typeNames: string[]): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    for (const dir of INCLUDE) {
      const file = join(dir, target);
      if (existsSync(file)) return file;
    }
    return target;
  };
  const files = new Set(["envoy/config/bootstrap/v3/bootstrap.proto"]);
  for (const name of typeNames) {
    const dir = name.split(".").slice(0, -1).join("/");
    for (const include of INCLUDE) {
      if (!existsSync(join(include, dir))) continue;
      for (const f of readdirSync(join(include, dir))) if (f.endsWith(".proto")) files.add(`${dir}/${f}`);
    }
  }
  root.loadSync([...files], { keepCase: true });
  root.resolveAll();
  return root;
}

function typeUrls(node: Node | null): string[] {
  if (isMap(node)) {
    return node.items.flatMap((pair) => {
      const key = isScalar(pair.key) ? pair.key.value : undefined;
      if (key === "@type" && isScalar(pair.value) && typeof pair.value.value === "string") return [pair.value.value];
      return typeUrls(pair.value as Node | null);
    });
  }
  if (isSeq(node)) return node.items.flatMap((item) => typeUrls(item as Node | null));
  return [];
}

function typeNameOfUrl(url: string): string {
  return url.slice(url.lastIndexOf("/") + 1);
}

const jsonName = (protoName: string): string => protoName.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

const INT32 = { min: -(2 ** 31), max: 2 ** 31 - 1 };
const UINT32 = { min: 0, max: 2 ** 32 - 1 };
const INTEGER_TYPES: Record<string, { min: number; max: number } | "int64" | "uint64"> = {
  int32: INT32,
  sint32: INT32,
  sfixed32: INT32,
  uint32: UINT32,
  fixed32: UINT32,
  int64: "int64",
  sint64: "int64",
  sfixed64: "int64",
  uint64: "uint64",
  fixed64: "uint64",
};

class BootstrapChecker {
  constructor(
    private readonly root: protobuf.Root,
    private readonly lines: LineCounter,
    private readonly problems: EnvoyProblem[],
  ) {}

  private problem(node: Node | null | undefined, path: string, message: string): void {
    const offset = node?.range?.[0] ?? 0;
    this.problems.push({ line: this.lines.linePos(offset).line, path, message });
  }

  message(node: Node | null, type: protobuf.Type, path: string, skipKey?: string): void {
    const wkt = this.wellKnown(node, type, path);
    if (wkt) return;
    if (!isMap(node)) {
      this.problem(node, path, `expected a mapping (${type.fullName.slice(1)})`);
      return;
    }
    const set = new Set<string>();
    const oneofs = new Map<string, string>();
    for (const pair of node.items) {
      const keyNode = pair.key as Node;
      const key = isScalar(keyNode) ? String(keyNode.value) : "";
      if (key === skipKey) continue;
      const here = path === "" ? key : `${path}.${key}`;
      const field = type.fields[key] ?? type.fieldsArray.find((f) => jsonName(f.name) === key);
      if (!field) {
        this.problem(keyNode, here, `unknown field "${key}" in ${type.fullName.slice(1)}${nearest(key, type)}`);
        continue;
      }
      if (field.options?.deprecated === true) {
        this.problem(
          keyNode,
          here,
          `deprecated field (since ${field.options["(envoy.annotations.deprecated_at_minor_version)"] ?? "?"})`,
        );
      }
      const value = pair.value as Node | null;
      if (value === null || (isScalar(value) && value.value === null)) continue; // JSON null: unset
      set.add(field.name);
      if (field.partOf) {
        const other = oneofs.get(field.partOf.name);
        if (other !== undefined) {
          this.problem(
            keyNode,
            here,
            `"${key}" and "${other}" are both set, but only one of oneof ${field.partOf.name} may be`,
          );
        }
        oneofs.set(field.partOf.name, key);
      }
      this.field(value, field, here);
    }
    for (const field of type.fieldsArray) {
      // A oneof member's rules apply only when it is the one set.
      if (set.has(field.name) || field.partOf) continue;
      const o = field.options ?? {};
      // A string that must not be empty is required too (e.g. a cluster's name).
      const minLength = o["(validate.rules).string.min_len"] ?? o["(validate.rules).string.min_bytes"];
      if (o["(validate.rules).message.required"] === true || (typeof minLength === "number" && minLength > 0)) {
        this.problem(node, path, `missing required field "${field.name}" of ${type.fullName.slice(1)}`);
      }
    }
    for (const oneof of type.oneofsArray) {
      if (oneof.options?.["(validate.required)"] === true && !oneofs.has(oneof.name)) {
        this.problem(node, path, `one of ${oneof.oneof.join(", ")} is required (${type.fullName.slice(1)})`);
      }
    }
  }

  private field(node: Node, field: protobuf.Field, path: string): void {
    if (field instanceof protobuf.MapField) {
      if (!isMap(node)) {
        this.problem(node, path, "expected a mapping (a map field)");
        return;
      }
      for (const pair of node.items) {
        const key = isScalar(pair.key) ? String(pair.key.value) : "";
        this.single(pair.value as Node, field, `${path}["${key}"]`);
      }
      return;
    }
    if (field.repeated) {
      if (!isSeq(node)) {
        this.problem(node, path, "expected a list (a repeated field)");
        return;
      }
      const min = field.options?.["(validate.rules).repeated.min_items"];
      if (typeof min === "number" && node.items.length < min) {
        this.problem(node, path, `needs at least ${min} item${min === 1 ? "" : "s"}`);
      }
      node.items.forEach((item, i) => {
        this.single(item as Node, field, `${path}[${i}]`);
      });
      return;
    }
    this.single(node, field, path);
  }

  private single(node: Node, field: protobuf.Field, path: string): void {
    const type = field.resolvedType;
    if (type instanceof protobuf.Type) {
      this.message(node, type, path);
      return;
    }
    if (type instanceof protobuf.Enum) {
      const v = isScalar(node) ? node.value : undefined;
      const ok =
        typeof v === "string" ? v in type.values : typeof v === "number" && Object.values(type.values).includes(v);
      if (!ok) {
        this.problem(
          node,
          path,
          `${JSON.stringify(v)} is not a value of ${type.fullName.slice(1)} (${Object.keys(type.values).join(", ")})`,
        );
      }
      return;
    }
    this.scalar(node, field.type, path, field.options ?? {});
  }

  private scalar(node: Node, type: string, path: string, options: Record<string, unknown>): void {
    if (!isScalar(node)) {
      this.problem(node, path, `expected a ${type} value`);
      return;
    }
    const v = (node as Scalar).value;
    const bad = (what: string): void => this.problem(node, path, `expected ${what}, got ${JSON.stringify(v)}`);
    if (type === "string") {
      if (typeof v !== "string") {
        bad("a string");
        return;
      }
      const min = options["(validate.rules).string.min_len"] ?? options["(validate.rules).string.min_bytes"];
      if (typeof min === "number" && [...v].length < min) this.problem(node, path, `must not be shorter than ${min}`);
      return;
    }
    if (type === "bool") {
      if (typeof v !== "boolean") bad("true or false");
      return;
    }
    if (type === "bytes") {
      if (typeof v !== "string" || !/^[A-Za-z0-9+/_-]*=*$/.test(v)) bad("base64");
      return;
    }
    if (type === "double" || type === "float") {
      const n = typeof v === "string" && /^(NaN|-?Infinity|-?\d+(\.\d+)?([eE][-+]?\d+)?)$/.test(v) ? Number(v) : v;
      if (typeof n !== "number") {
        bad("a number");
        return;
      }
      this.range(node, path, n, options, type);
      return;
    }
    const int = INTEGER_TYPES[type];
    if (int === undefined) {
      bad(`a ${type}`);
      return;
    }
    const text = typeof v === "number" ? String(v) : typeof v === "string" ? v : "";
    if (!/^-?\d+$/.test(text) || (int === "uint64" && text.startsWith("-"))) {
      bad(`a whole number (${type})`);
      return;
    }
    if (typeof int === "object" && (Number(text) < int.min || Number(text) > int.max)) {
      bad(`a ${type}`);
      return;
    }
    this.range(node, path, Number(text), options, type);
  }

  /** protoc-gen-validate's numeric rules: lt, lte, gt, gte. */
  private range(node: Node, path: string, n: number, options: Record<string, unknown>, type: string): void {
    const rule = (op: string): number | undefined => {
      const r = options[`(validate.rules).${type}.${op}`];
      return typeof r === "number" ? r : undefined;
    };
    const checks: [string, (limit: number) => boolean][] = [
      ["lt", (l) => n < l],
      ["lte", (l) => n <= l],
      ["gt", (l) => n > l],
      ["gte", (l) => n >= l],
    ];
    for (const [op, ok] of checks) {
      const limit = rule(op);
      if (limit !== undefined && !ok(limit)) this.problem(node, path, `must be ${op} ${limit}, got ${n}`);
    }
  }

  /** The JSON forms of google.protobuf's special messages; false for every other type. */
  private wellKnown(node: Node | null, type: protobuf.Type, path: string): boolean {
    const name = type.fullName.slice(1);
    const scalar = isScalar(node) ? node.value : undefined;
    switch (name) {
      case "google.protobuf.Any":
        this.any(node, path);
        return true;
      case "google.protobuf.Duration":
        if (typeof scalar !== "string" || !/^-?\d+(\.\d{1,9})?s$/.test(scalar)) {
          this.problem(
            node,
            path,
            `expected a duration such as "1s" or "0.25s", got ${JSON.stringify(scalar ?? null)}`,
          );
        }
        return true;
      case "google.protobuf.Timestamp":
        if (typeof scalar !== "string" || Number.isNaN(Date.parse(scalar))) {
          this.problem(node, path, "expected an RFC 3339 timestamp");
        }
        return true;
      case "google.protobuf.Struct":
        if (!isMap(node)) this.problem(node, path, "expected a mapping (google.protobuf.Struct)");
        return true;
      case "google.protobuf.Value":
        return true;
      case "google.protobuf.ListValue":
        if (!isSeq(node)) this.problem(node, path, "expected a list (google.protobuf.ListValue)");
        return true;
      case "google.protobuf.Empty":
        if (!isMap(node) || node.items.length > 0) this.problem(node, path, "expected {} (google.protobuf.Empty)");
        return true;
      case "google.protobuf.FieldMask":
        if (typeof scalar !== "string") this.problem(node, path, "expected a field mask string");
        return true;
    }
    if (name.startsWith("google.protobuf.") && name.endsWith("Value") && type.fields.value && node !== null) {
      // Wrappers (UInt32Value, BoolValue…) are their value in JSON.
      this.single(node, type.fields.value, path);
      return true;
    }
    return false;
  }

  private any(node: Node | null, path: string): void {
    if (!isMap(node)) {
      this.problem(node, path, "expected a mapping with @type (google.protobuf.Any)");
      return;
    }
    const typePair = (node as YAMLMap).items.find((p) => isScalar(p.key) && p.key.value === "@type");
    const url = typePair && isScalar(typePair.value) ? typePair.value.value : undefined;
    if (typeof url !== "string" || !url.includes("/")) {
      this.problem(node, path, 'missing "@type": type.googleapis.com/<message> (google.protobuf.Any)');
      return;
    }
    let type: protobuf.Type;
    try {
      type = this.root.lookupType(typeNameOfUrl(url));
    } catch {
      this.problem(typePair?.value as Node, `${path}.@type`, `no Envoy API message "${typeNameOfUrl(url)}"`);
      return;
    }
    const here = `${path}<${type.name}>`;
    if (hasSpecialJson(type)) {
      const value = (node as YAMLMap).items.find((p) => isScalar(p.key) && p.key.value === "value");
      this.message((value?.value as Node) ?? null, type, here);
      return;
    }
    this.message(node, type, here, "@type");
  }
}

/** google.protobuf messages whose JSON is not an object of their fields: inside Any, under "value". */
function hasSpecialJson(type: protobuf.Type): boolean {
  const name = type.fullName.slice(1);
  if (!name.startsWith("google.protobuf.")) return false;
  if (name === "google.protobuf.Any" || name === "google.protobuf.Empty") return false;
  return (
    ["Duration", "Timestamp", "Struct", "Value", "ListValue", "FieldMask"].includes(type.name) ||
    (type.name.endsWith("Value") && type.fields.value !== undefined)
  );
}

function nearest(key: string, type: protobuf.Type): string {
  const names = type.fieldsArray.map((f) => f.name);
  const close = names.find((n) => distance(n, key) <= 2);
  return close ? ` (did you mean "${close}"?)` : "";
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(
        (prev[j] ?? 0) + 1,
        (row[j - 1] ?? 0) + 1,
        (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    prev = row;
  }
  return prev[b.length] ?? 0;
}
