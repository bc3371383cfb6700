/**
 * The resolver's decision for one query, without sockets: answer from the view, or say that the
 * query must go upstream. Pure apart from the round-robin counters passed in.
 */
import { type Answer, decode, encode, encodingLength, type Packet, type Question } from "dns-packet";
import ipaddr from "ipaddr.js";
import { addressOfReverseName, type ResolverView, TTL } from "./records.js";

const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
const RCODE_NOTIMP = 4;
export const RCODE_REFUSED = 5;

const FLAG_QR = 0x8000;
const FLAG_AA = 0x0400;
const FLAG_TC = 0x0200;
const FLAG_RD = 0x0100;
const FLAG_RA = 0x0080;
const FLAG_CD = 0x0010;
const OPCODE_MASK = 0x7800;

const TYPE_A = 1;
const TYPE_AAAA = 28;
const TYPE_OPT = 41;
const CLASS_IN = 1;

/** RFC 1035's limit for UDP without EDNS. */
const MIN_UDP_SIZE = 512;
const MAX_SIZE = 65535;

export type Outcome =
  /** Send this packet back to the client. */
  | { kind: "reply"; packet: Buffer }
  /** Not ours to answer: forward the query unchanged to the sandbox's upstreams. */
  | { kind: "forward" }
  /** Not worth an answer (not a query, or too short to carry an id). */
  | { kind: "drop" };

const DROP: Outcome = { kind: "drop" };
const FORWARD: Outcome = { kind: "forward" };

/**
 * Per-name rotation so that consecutive queries for a name with several addresses start at a
 * different one each time. Counters are per family so that a client's paired A and AAAA queries
 * do not both advance the same counter and leave the A order stuck.
 */
export class RoundRobin {
  private readonly counters = [new Map<string, number>(), new Map<string, number>()] as const;

  /** The offset to start at for this query. */
  next(name: string, family: 4 | 6, count: number): number {
    const map = this.counters[family === 4 ? 0 : 1];
    const n = map.get(name) ?? 0;
    // Bounded by the names that exist, but a churn of short-lived names must not grow it forever.
    if (map.size >= 4096 && n === 0) map.clear();
    map.set(name, n + 1);
    return n % count;
  }
}

/**
 * Decides the answer to `query` (a raw DNS message) for the sandbox `sandboxId`. `tcp` lifts the
 * UDP size limit. Throws only if the view throws or gives an address of the wrong family; the
 * caller answers SERVFAIL then.
 */
export function answer(
  query: Buffer,
  sandboxId: string,
  view: ResolverView,
  rr: RoundRobin,
  tcp: boolean,
): Outcome {
  // Responses are never answered: two resolvers must not be able to bounce packets forever.
  if (query.length < 12 || (query[2] as number) & 0x80) return DROP;
  if (query.readUInt16BE(2) & OPCODE_MASK) return reply(errorReply(query, RCODE_NOTIMP));
  if (query.readUInt16BE(4) !== 1) return reply(errorReply(query, RCODE_FORMERR));
  return quickAnswer(query, sandboxId, view, rr, tcp) ?? decodedAnswer(query, sandboxId, view, rr, tcp);
}

/**
 * The same decision as the fast path's, through dns-packet: every query the fast path leaves. The
 * header checks of `answer` must have passed.
 */
export function decodedAnswer(
  query: Buffer,
  sandboxId: string,
  view: ResolverView,
  rr: RoundRobin,
  tcp: boolean,
): Outcome {
  let packet: ReturnType<typeof decode>;
  try {
    packet = decode(query);
  } catch {
    return reply(errorReply(query, RCODE_FORMERR));
  }
  const question = packet.questions?.[0];
  if (question?.class !== "IN") return FORWARD;
  const name = normalize(question.name);
  if (name === "") return FORWARD;

  switch (question.type) {
    case "A":
    case "AAAA": {
      const family = question.type === "A" ? 4 : 6;
      const addresses = view.lookup(sandboxId, name, family);
      if (addresses === undefined) return FORWARD;
      const answers: Answer[] = [];
      const n = addresses.length;
      const start = n > 1 ? rr.next(name, family, n) : 0;
      for (let i = 0; i < n; i++) {
        answers.push({
          type: question.type,
          name: question.name,
          ttl: TTL,
          data: addresses[(start + i) % n] as string,
        });
      }
      return reply(respond(packet, question, answers, tcp));
    }
    case "PTR": {
      const address = addressOfReverseName(name);
      if (address === undefined) return FORWARD;
      const target = view.reverse(sandboxId, address);
      if (target === undefined) return FORWARD;
      return reply(
        respond(packet, question, [{ type: "PTR", name: question.name, ttl: TTL, data: target }], tcp),
      );
    }
    case "MX":
      // As Docker: a container name has no MX, which is NOERROR (mail falls back to the A record,
      // RFC 5321 §5.1), not the NXDOMAIN an upstream would give for a name it does not know.
      if (view.lookup(sandboxId, name, 4) === undefined && view.lookup(sandboxId, name, 6) === undefined) {
        return FORWARD;
      }
      return reply(respond(packet, question, [], tcp));
    default:
      return FORWARD;
  }
}

/** Bytes a label may have on the fast path: those of container names and aliases. */
const PLAIN = new Uint8Array(256);
for (const c of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
  PLAIN[c.charCodeAt(0)] = 1;

/** Wire form of addresses the view has given, so that the fast path parses each once. */
const rdata = new Map<string, Buffer>();

function addressBytes(address: string, length: number): Buffer {
  let bytes = rdata.get(address);
  if (bytes === undefined) {
    bytes = Buffer.from(ipaddr.parse(address).toByteArray());
    // Bounded by the addresses that exist, but churn must not grow it forever.
    if (rdata.size >= 4096) rdata.clear();
    rdata.set(address, bytes);
  }
  if (bytes.length !== length) throw new Error(`${address} is not an address of the family asked for`);
  return bytes;
}

/**
 * The common query, answered from the raw bytes without a decode and an encode: one A or AAAA
 * question of class IN for a name of plain labels, nothing after it but an optional EDNS record
 * without options. The reply is byte for byte what `decodedAnswer` gives (names uncompressed, as
 * dns-packet writes them, so truncation cuts at the same record); a name the view does not know is
 * forwarded, as there. Anything else is left to `decodedAnswer` (undefined). The header checks of
 * `answer` must have passed.
 */
export function quickAnswer(
  query: Buffer,
  sandboxId: string,
  view: ResolverView,
  rr: RoundRobin,
  tcp: boolean,
): Outcome | undefined {
  const size = query.length;
  if (size < 12 || query.readUInt16BE(4) !== 1 || query.readUInt16BE(6) !== 0 || query.readUInt16BE(8) !== 0)
    return undefined;
  const additionals = query.readUInt16BE(10);
  if (additionals > 1) return undefined;

  let name = "";
  let off = 12;
  for (;;) {
    if (off >= size) return undefined;
    const len = query[off] as number;
    if (len === 0) break;
    // Compression pointers and extended label types go the long way.
    if (len > 63 || off + 1 + len > size) return undefined;
    for (let i = off + 1; i <= off + len; i++) if (PLAIN[query[i] as number] === 0) return undefined;
    const label = query.toString("latin1", off + 1, off + 1 + len);
    name = name === "" ? label : `${name}.${label}`;
    off += 1 + len;
  }
  const nameEnd = off + 1;
  // The root goes upstream; dns-packet refuses names over 254 bytes (FORMERR).
  if (name === "" || nameEnd - 12 > 255) return undefined;
  const qEnd = nameEnd + 4;
  if (qEnd > size) return undefined;
  const type = query.readUInt16BE(nameEnd);
  if ((type !== TYPE_A && type !== TYPE_AAAA) || query.readUInt16BE(nameEnd + 2) !== CLASS_IN)
    return undefined;

  let limit = tcp ? MAX_SIZE : MIN_UDP_SIZE;
  if (additionals === 1) {
    // OPT: root name, type, the client's UDP size as class, extended rcode and flags, rdlength 0.
    if (size !== qEnd + 11 || query[qEnd] !== 0 || query.readUInt16BE(qEnd + 1) !== TYPE_OPT)
      return undefined;
    if (query.readUInt16BE(qEnd + 9) !== 0) return undefined;
    if (!tcp) limit = Math.max(MIN_UDP_SIZE, query.readUInt16BE(qEnd + 3));
  } else if (size !== qEnd) return undefined;

  const lower = name.toLowerCase();
  const family = type === TYPE_A ? 4 : 6;
  const addresses = view.lookup(sandboxId, lower, family);
  if (addresses === undefined) return FORWARD;
  const n = addresses.length;
  const start = n > 1 ? rr.next(lower, family, n) : 0;

  const nameLen = nameEnd - 12;
  const dataLen = family === 4 ? 4 : 16;
  const recordLen = nameLen + 10 + dataLen;
  let flags = FLAG_QR | FLAG_AA | FLAG_RA | (query.readUInt16BE(2) & (FLAG_RD | FLAG_CD));
  let count = n;
  if (qEnd + n * recordLen > limit) {
    flags |= FLAG_TC;
    count = Math.max(0, Math.floor((limit - qEnd) / recordLen));
  }
  const out = Buffer.allocUnsafe(qEnd + count * recordLen);
  query.copy(out, 0, 0, qEnd);
  out.writeUInt16BE(flags, 2);
  out.writeUInt16BE(count, 6);
  out.writeUInt32BE(0, 8);
  let at = qEnd;
  for (let i = 0; i < count; i++) {
    query.copy(out, at, 12, nameEnd);
    at += nameLen;
    out.writeUInt16BE(type, at);
    out.writeUInt16BE(CLASS_IN, at + 2);
    out.writeUInt32BE(TTL, at + 4);
    out.writeUInt16BE(dataLen, at + 8);
    addressBytes(addresses[(start + i) % n] as string, dataLen).copy(out, at + 10);
    at += 10 + dataLen;
  }
  return reply(out);
}

/** Lowercase without the trailing dot; "" for the root. */
function normalize(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith(".") ? lower.slice(0, -1) : lower;
}

function reply(packet: Buffer): Outcome {
  return { kind: "reply", packet };
}

function respond(query: Packet, question: Question, answers: Answer[], tcp: boolean): Buffer {
  const flags = FLAG_AA | FLAG_RA | ((query.flags ?? 0) & (FLAG_RD | FLAG_CD));
  const out: Packet = { type: "response", id: query.id ?? 0, flags, questions: [question], answers };
  const limit = tcp ? MAX_SIZE : udpLimit(query);
  if (encodingLength(out) > limit) {
    // Whole records only, with TC so that the client retries over TCP (RFC 2181 §9).
    out.flags = flags | FLAG_TC;
    while (answers.length > 0 && encodingLength(out) > limit) answers.pop();
  }
  return encode(out);
}

function udpLimit(query: Packet): number {
  for (const rr of query.additionals ?? []) {
    // The client's own EDNS size, as Docker does: the path is the sandbox's loopback.
    if (rr.type === "OPT") return Math.max(MIN_UDP_SIZE, rr.udpPayloadSize);
  }
  return MIN_UDP_SIZE;
}

/**
 * An answer with only a header and the query's question section, built from the raw bytes so it
 * works for questions dns-packet cannot re-encode (unknown types and classes) and for queries it
 * cannot decode. `query` must be at least 12 bytes.
 */
export function errorReply(query: Buffer, rcode: number): Buffer {
  const end = query.readUInt16BE(4) === 1 ? questionEnd(query) : -1;
  const out = Buffer.alloc(end > 0 ? end : 12);
  query.copy(out, 0, 0, 2);
  if (end > 0) query.copy(out, 12, 12, end);
  const flags = query.readUInt16BE(2);
  out.writeUInt16BE(FLAG_QR | FLAG_RA | (flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | rcode, 2);
  out.writeUInt16BE(end > 0 ? 1 : 0, 4);
  return out;
}

/** Offset just after the first question, or -1 if it does not fit in the message. */
export function questionEnd(msg: Buffer): number {
  let off = 12;
  for (;;) {
    if (off >= msg.length) return -1;
    const len = msg[off] as number;
    if (len === 0) {
      off += 1;
      break;
    }
    // A compression pointer in the first question can only point into the header: malformed.
    if (len & 0xc0) return -1;
    off += 1 + len;
  }
  return off + 4 <= msg.length ? off + 4 : -1;
}
