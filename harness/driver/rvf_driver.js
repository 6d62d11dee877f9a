#!/usr/bin/env node
// crashgate's driver for the real @ruvector/rvf packages: speaks backends/PROTOCOL.md (version 1)
// on stdin/stdout, one JSON object per line; logs go to stderr only.
//
//   node rvf_driver.js --target native|sdk [--prefix DIR]
//
// --target native: RvfDatabase of @ruvector/rvf-node (the N-API engine, used directly).
// --target sdk:    RvfDatabase of @ruvector/rvf (the TypeScript SDK as applications use it:
//                  string ids, its `<path>.idmap.json` side file, async API).
// --prefix DIR:    load the packages from DIR/node_modules (crashgate's npm cache, see
//                  harness/driver/npm_cache.py); without it, Node's normal resolution.
//
// Facts this driver relies on (read in the packages' index.d.ts / dist/*.d.ts and READMEs, and
// checked against 0.1.8 and 0.2.3 on linux-x64):
// - query() reports the SQUARED Euclidean distance for metric l2 (types.d.ts of the SDK:
//   "`l2` Squared Euclidean distance"); the protocol wants the true distance, so hits carry
//   sqrt(distance).
// - the native ids are JS numbers (`ids: number[]`), so an id above 2^53-1 would be rounded
//   silently: the driver refuses it (EINVAL) rather than write another id.
// - neither API reads a stored vector or its metadata back (hits are `{id, distance}` only), so
//   `fetch` is EUNSUPPORTED and hits carry `{}` as metadata. The native target declares
//   `reader: "rvf-ruvector"`: crashgate answers fetch by reading the file with its own reader
//   of the runtime's layout (PROTOCOL.md, the declaration). The SDK target names no reader: its
//   file holds the SDK's labels 1, 2, ... as ids, the string ids live in <path>.idmap.json.
// - both declare `metadata: false`: the native API takes metadata only as numbered typed fields
//   and never writes them to the file; the SDK passes metadata to the engine at ingest, but no
//   API returns it and its filters name numbered fieldIds. A record with metadata is refused.
// - a store is created with its dimension: without the `dimension` option, the file is created
//   at the first upsert, with that upsert's dimension.
"use strict";

const fs = require("fs");
const path = require("path");
const readline = require("readline");

const PROTOCOL = 1;
const MAX_ID = BigInt(Number.MAX_SAFE_INTEGER);

class WireError extends Error {
  constructor(code, message) {
    super(message);
    this.wireCode = code;
  }
}

function parseArgs(argv) {
  const out = { target: null, prefix: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--target") out.target = argv[++i];
    else if (argv[i] === "--prefix") out.prefix = argv[++i];
    else throw new Error(`unknown argument ${argv[i]}: use --target native|sdk [--prefix DIR]`);
  }
  if (out.target !== "native" && out.target !== "sdk") {
    throw new Error(`--target ${out.target}: must be native or sdk`);
  }
  return out;
}

function load(prefix, name) {
  const where = prefix ? path.join(prefix, "node_modules", name) : name;
  const mod = require(where);
  let version = "unknown";
  try {
    const pkg = prefix ? path.join(prefix, "node_modules", name, "package.json")
      : require.resolve(`${name}/package.json`);
    version = JSON.parse(fs.readFileSync(pkg, "utf8")).version;
  } catch (_) { /* a package without package.json in exports: the name is still evidence */ }
  return { mod, version };
}

// RVF error codes (rvf-types ErrorCode, mirrored in the SDK's errors.d.ts) -> protocol codes
const FORMAT_CODES = new Set([0x0100, 0x0102, 0x0103, 0x0104, 0x0105, 0x0106, 0x0107, 0x0108]);
function wireCodeOf(code) {
  if (code === 0x0300) return "ELOCK";                  // LockHeld
  if (code === 0x0101) return "EVERSION";               // InvalidVersion
  if (FORMAT_CODES.has(code)) return "ECORRUPT";        // magic, checksum, truncated, manifest ...
  if (code === 0x0200 || code === 0x0203 || code === 0x0204) return "EINVAL";
  if (code === 0x0302) return "ENOSPC";                 // DiskFull
  if (code === 0x0303) return "EIO";                    // FsyncFailed
  if (code === 0xff02) return "ECLOSED";                // the SDK's StoreClosed
  return `ERVF_0x${code.toString(16).padStart(4, "0")}`;
}

function toWireError(err) {
  if (err instanceof WireError) return { code: err.wireCode, message: err.message };
  const message = String(err && err.message !== undefined ? err.message : err);
  let code = null;
  if (err && typeof err.code === "number") code = err.code;   // the SDK's RvfError
  const hex = message.match(/RVF error 0x([0-9a-fA-F]{4})/);   // the native addon's messages
  if (hex) code = parseInt(hex[1], 16);
  if (code !== null) return { code: wireCodeOf(code), message };
  if (/closed/i.test(message)) return { code: "ECLOSED", message };
  return { code: "ERVF", message };
}

function nativeId(wire) {
  if (typeof wire !== "string" || !/^[0-9]+$/.test(wire)) {
    throw new WireError("EINVAL", `id ${JSON.stringify(wire)}: ids are decimal strings`);
  }
  if (BigInt(wire) > MAX_ID) {
    throw new WireError("EINVAL", `id ${wire} is above 2^53-1: @ruvector/rvf-node takes ids as ` +
      "JS numbers (ids: number[]) and would round it to another id; use ids below 2^53");
  }
  return Number(wire);
}

function compareHits(a, b) {
  if (a.distance !== b.distance) return a.distance - b.distance;
  const x = BigInt(a.id), y = BigInt(b.id);
  return x < y ? -1 : x > y ? 1 : 0;
}

// both targets declare metadata: false (see declaration()): refuse rather than drop it
function refuseMetadata(records, what) {
  for (const r of records) {
    if (r.metadata && Object.keys(r.metadata).length > 0) {
      throw new WireError("EUNSUPPORTED", `record ${r.id} has metadata: ${what}`);
    }
  }
}

function flatten(records, dim) {
  const flat = new Float32Array(records.length * dim);
  records.forEach((r, i) => {
    if (!Array.isArray(r.vector) || r.vector.length !== dim) {
      throw new WireError("EINVAL", `record ${r.id}: vector of dimension ` +
        `${Array.isArray(r.vector) ? r.vector.length : "?"}, the store's dimension is ${dim}`);
    }
    flat.set(r.vector, i * dim);
  });
  return flat;
}

function declaration(target, nativeVersion) {
  const native = target === "native";
  const notes = {
    distance: "the package reports squared l2; the driver sends sqrt of it (PROTOCOL.md hits)",
    recall: "@ruvector/rvf-node README: 'k-NN search with HNSW progressive indexing (recall " +
      "0.70 -> 0.95)': the floor it documents is the promise",
    durability: "README: 'Single-file vector database - crash-safe, no WAL, append-only'",
    read_back: "neither API returns a stored vector or its metadata (hits are {id, distance}): " +
      "the driver answers fetch with EUNSUPPORTED and hits carry {} as metadata" +
      (native ? "; the declaration names the reader rvf-ruvector: crashgate reads stored " +
        "vectors back from the file with its own reader of the runtime's layout" :
        "; no reader: the file's ids are the SDK's labels (the string ids live in " +
        "<path>.idmap.json), which a reader of the layout cannot map back"),
    creation: "the file is created at open with option dimension=N, else at the first upsert",
    damage: "the docs make no promise about damaged files (the error codes include " +
      "InvalidChecksum and TruncatedSegment)",
    clock: "the package reads the real clock: open's clock_offset cannot reach it (a lock " +
      "made to look 31 s old on crashgate's clock is not old to the package), so the " +
      "declaration says real_clock: true and crashgate waits for real where a row needs " +
      "time to pass (a dead writer's lock recovered once stale)",
    engine: `@ruvector/rvf-node ${nativeVersion}`,
  };
  if (native) {
    notes.ids = "ids are JS numbers in the package: ids above 2^53-1 are refused (EINVAL)";
    notes.metadata = "declared metadata: false (the store keeps no metadata): the native API " +
      "takes metadata only as numbered typed fields ({fieldId, valueType, value}), not string " +
      "keys, never returns it and never writes it to the file: a record with metadata is " +
      "EUNSUPPORTED";
  } else {
    notes.ids = "string ids, mapped by the SDK to labels 1, 2, ... kept in <path>.idmap.json";
    notes.metadata = "declared metadata: false (the store keeps no metadata crashgate can see): " +
      "the SDK takes metadata at ingestBatch, but no API returns it (RvfSearchResult is " +
      "{id, distance}) and its filters name numbered fieldIds, not keys: a record with " +
      "metadata is EUNSUPPORTED";
    notes.file_format = "the .rvf file is the native layout, but its ids are the SDK's labels; " +
      "the string ids live in <path>.idmap.json, so native readers see other ids";
  }
  return {
    durability: "power-loss",
    capabilities: native ? ["vector", "compact", "witness", "writer-lock"]
      : ["vector", "compact", "writer-lock"],
    file_format: native ? "rvf-ruvector/1" : "rvf-ruvector-sdk/1",
    metric: "l2",
    recall: { k: 10, at_least: 0.70 },
    damage: "none",
    metadata: false,
    real_clock: true,
    reader: native ? "rvf-ruvector" : null,
    notes,
  };
}

// One store of the native engine. Synchronous API.
class NativeStore {
  constructor(mod) {
    this.Db = mod.RvfDatabase;
    this.db = null;
  }
  open(p, options) {
    this.path = p;
    this.readonly = options.readonly === "1" || options.readonly === "true";
    if (fs.existsSync(p)) {
      this.db = this.readonly ? this.Db.openReadonly(p) : this.Db.open(p);
    } else if (this.readonly) {
      throw new WireError("ENOENT", `${p} does not exist and readonly is set: nothing to open`);
    } else if (options.dimension) {
      this.db = this.Db.create(p, { dimension: Number(options.dimension), metric: "l2" });
    }
  }
  ensure(dim) {
    if (!this.db) this.db = this.Db.create(this.path, { dimension: dim, metric: "l2" });
    return this.db;
  }
  upsert(records) {
    if (records.length === 0) return null;
    refuseMetadata(records, "@ruvector/rvf-node takes only numbered typed fields and never " +
      "returns them (declared metadata: false)");
    const ids = records.map((r) => nativeId(r.id));
    const dim = this.db ? this.db.dimension() : records[0].vector.length;
    const flat = flatten(records, dim);
    const res = this.ensure(dim).ingestBatch(flat, ids);
    if (res.rejected > 0) {
      throw new WireError("ERVF_REJECTED", `ingestBatch accepted ${res.accepted} and rejected ` +
        `${res.rejected} of ${records.length} records (epoch ${res.epoch})`);
    }
    return null;
  }
  query(vector, k) {
    if (!this.db) return [];
    return this.db.query(Float32Array.from(vector), k).map((h) => ({ id: String(h.id), distance: h.distance }));
  }
  remove(ids) {
    if (!this.db || ids.length === 0) return 0;
    return this.db.delete(ids.map(nativeId)).deleted;
  }
  count() { return this.db ? this.db.status().totalVectors : 0; }
  compact() { if (this.db) this.db.compact(); return null; }
  verify() {
    if (!this.db) return [];
    const w = this.db.verifyWitness();
    return w.valid ? [] : [`witness chain invalid after ${w.entries} entries: ${w.error || "(no reason given)"}`];
  }
  close() { if (this.db) { this.db.close(); this.db = null; } return null; }
}

// One store through the SDK. Async API, string ids.
class SdkStore {
  constructor(mod) {
    this.Db = mod.RvfDatabase;
    this.db = null;
  }
  async open(p, options) {
    this.path = p;
    this.readonly = options.readonly === "1" || options.readonly === "true";
    if (fs.existsSync(p)) {
      this.db = this.readonly ? await this.Db.openReadonly(p) : await this.Db.open(p);
    } else if (this.readonly) {
      throw new WireError("ENOENT", `${p} does not exist and readonly is set: nothing to open`);
    } else if (options.dimension) {
      this.db = await this.Db.create(p, { dimensions: Number(options.dimension), metric: "l2" });
    }
  }
  async upsert(records) {
    if (records.length === 0) return null;
    refuseMetadata(records, "the SDK never returns metadata (declared metadata: false)");
    const dim = this.db ? await this.db.dimension() : records[0].vector.length;
    flatten(records, dim);   // the dimension check only: the SDK takes the entries themselves
    if (!this.db) this.db = await this.Db.create(this.path, { dimensions: dim, metric: "l2" });
    const res = await this.db.ingestBatch(records.map((r) => ({
      id: r.id, vector: r.vector })));
    if (res.rejected > 0) {
      throw new WireError("ERVF_REJECTED", `ingestBatch accepted ${res.accepted} and rejected ` +
        `${res.rejected} of ${records.length} records (epoch ${res.epoch})`);
    }
    return null;
  }
  async query(vector, k) {
    if (!this.db) return [];
    return (await this.db.query(vector, k)).map((h) => ({ id: String(h.id), distance: h.distance }));
  }
  async remove(ids) {
    if (!this.db || ids.length === 0) return 0;
    return (await this.db.delete(ids)).deleted;
  }
  async count() { return this.db ? (await this.db.status()).totalVectors : 0; }
  async compact() { if (this.db) await this.db.compact(); return null; }
  async close() { if (this.db) { await this.db.close(); this.db = null; } return null; }
}

const KNOWN_OPTIONS = new Set(["dimension", "readonly"]);

class Driver {
  constructor(args) {
    this.target = args.target;
    if (args.target === "native") {
      const n = load(args.prefix, "@ruvector/rvf-node");
      this.nativeVersion = n.version;
      this.name = `@ruvector/rvf-node ${n.version}`;
      this.make = () => new NativeStore(n.mod);
    } else {
      const s = load(args.prefix, "@ruvector/rvf");
      // the engine under the SDK is the one npm resolved for it (an `overrides` entry may pin it)
      const n = load(args.prefix, "@ruvector/rvf-node");
      this.nativeVersion = n.version;
      this.name = `@ruvector/rvf ${s.version} (engine @ruvector/rvf-node ${n.version})`;
      this.make = () => new SdkStore(s.mod);
    }
    this.store = null;
    this.closed = false;
  }

  async handle(op, args) {
    if (op === "hello") {
      if (args.protocol !== PROTOCOL) {
        throw new WireError("EINVAL", `protocol ${args.protocol}: this driver speaks ${PROTOCOL}`);
      }
      return { protocol: PROTOCOL, name: this.name,
        declaration: declaration(this.target, this.nativeVersion) };
    }
    if (this.closed) throw new WireError("ECLOSED", "the store is closed");
    if (op === "open") {
      const options = args.options || {};
      for (const k of Object.keys(options)) {
        if (!KNOWN_OPTIONS.has(k)) {
          throw new WireError("EINVAL", `option ${k}=${options[k]}: not one of ` +
            `${[...KNOWN_OPTIONS].join(", ")}`);
        }
      }
      if (options.dimension !== undefined && !/^[1-9][0-9]*$/.test(options.dimension)) {
        throw new WireError("EINVAL", `option dimension=${options.dimension}: a positive integer`);
      }
      const store = this.make();
      await store.open(args.path, options);
      this.store = store;
      return null;
    }
    if (!this.store) throw new WireError("EINVAL", `${op} before open: send open first`);
    const s = this.store;
    switch (op) {
      case "upsert": return s.upsert(args.records);
      case "query": {
        if (args.where !== null && args.where !== undefined && Object.keys(args.where).length) {
          throw new WireError("EUNSUPPORTED", "metadata filters: not declared by this driver");
        }
        const hits = await s.query(args.vector, args.k);
        return hits.map((h) => ({ id: h.id, distance: Math.sqrt(Math.max(0, h.distance)), metadata: {} }))
          .sort(compareHits);
      }
      case "remove": return s.remove(args.ids);
      case "count": return s.count();
      case "compact": return s.compact();
      case "verify":
        if (!s.verify) throw new WireError("EUNSUPPORTED", "the SDK has no witness verification");
        return s.verify();
      case "close": {
        const out = await s.close();
        this.closed = true;
        return out;
      }
      case "fetch":
        throw new WireError("EUNSUPPORTED", "fetch: the package has no API that reads a stored " +
          "vector back (RvfDatabase: ingestBatch, query -> {id, distance}, delete, status)");
      default:
        throw new WireError("EUNSUPPORTED", `op ${op}: not an op of this vector store`);
    }
  }
}

function main() {
  let driver;
  try {
    driver = new Driver(parseArgs(process.argv.slice(2)));
  } catch (err) {
    process.stderr.write(`rvf_driver: cannot start: ${err && err.stack || err}\n`);
    process.exit(2);
  }
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  // one request at a time, in order: the SDK is async, the protocol is strictly sequential
  let chain = Promise.resolve();
  rl.on("line", (line) => {
    chain = chain.then(async () => {
      if (!line.trim()) return;
      let req;
      try {
        req = JSON.parse(line);
      } catch (err) {
        process.stderr.write(`rvf_driver: not JSON: ${line.slice(0, 200)}\n`);
        process.exit(2);
      }
      let reply;
      try {
        const ok = await driver.handle(req.op, req.args || {});
        reply = { id: req.id, ok: ok === undefined ? null : ok };
      } catch (err) {
        reply = { id: req.id, error: toWireError(err) };
        if (!(err instanceof WireError)) process.stderr.write(`rvf_driver: ${req.op}: ${err && err.stack || err}\n`);
      }
      process.stdout.write(JSON.stringify(reply) + "\n");
      if (req.op === "close" && reply.ok !== undefined) rl.close();
    });
  });
  // end of stdin: exit at once (PROTOCOL.md), after the request in flight has answered
  rl.on("close", () => { chain.then(() => process.exit(0)); });
}

main();
