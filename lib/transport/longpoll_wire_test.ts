import assert from "node:assert/strict";
import {
  BATCH_MAX_BYTES,
  decodeBatch,
  encodeBatch,
  Inbox,
  LongPollFrameError,
  Outbox,
  PACKET_MAX_BYTES,
  parseAck,
  parsePollNumber,
  RESEND_AFTER_MS,
  WINDOW_PACKETS,
} from "./longpoll_wire.ts";

const bytes = (...values: number[]) => new Uint8Array(values);

Deno.test("a batch decodes to the packets it was encoded from; an empty body is no packets", () => {
  const packets = [{ seq: 0, data: bytes(1, 2) }, { seq: 7, data: bytes() }];
  assert.deepEqual(decodeBatch(encodeBatch(packets)), packets);
  assert.deepEqual(decodeBatch(new Uint8Array(0)), []);
});

Deno.test("truncated, oversized packets and bodies, and bad Ack headers are refused", () => {
  const body = encodeBatch([{ seq: 1, data: bytes(1, 2, 3) }]);
  assert.throws(() => decodeBatch(body.subarray(0, 5)), LongPollFrameError);
  assert.throws(() => decodeBatch(body.subarray(0, 10)), LongPollFrameError);
  const huge = new Uint8Array(8);
  new DataView(huge.buffer).setUint32(4, PACKET_MAX_BYTES + 1);
  assert.throws(() => decodeBatch(huge), /over/);
  assert.throws(() => decodeBatch(new Uint8Array(BATCH_MAX_BYTES + 1)), /over/);
  for (const header of [undefined, "", "-1", "1.5", "99999999999"]) {
    assert.throws(() => parseAck(header), LongPollFrameError);
  }
  for (const header of ["", "x", "-1", "99999999999"]) {
    assert.throws(() => parsePollNumber(header), LongPollFrameError);
  }
  assert.equal(parsePollNumber(undefined), undefined, "a request without a Poll number is fine");
  assert.equal(parsePollNumber("12"), 12);
});

Deno.test("the outbox keeps packets until acknowledged, hands back failed ones at once and late ones after a while", () => {
  const outbox = new Outbox();
  outbox.push(new Uint8Array(PACKET_MAX_BYTES + 1));
  assert.equal(outbox.size, 2, "a write is cut into packets");
  const sent = outbox.take(BATCH_MAX_BYTES, 0);
  assert.equal(outbox.take(BATCH_MAX_BYTES, 1).length, 0, "nothing is due while the poll is out");
  outbox.giveBack(sent.slice(1));
  assert.deepEqual(outbox.take(BATCH_MAX_BYTES, 2).map((packet) => packet.seq), [1]);
  assert.deepEqual(outbox.take(BATCH_MAX_BYTES, RESEND_AFTER_MS).map((packet) => packet.seq), [0]);
  outbox.ack(1);
  assert.equal(outbox.size, 1);
  assert.throws(() => outbox.ack(5), /past the last packet/);
});

Deno.test("the outbox hands every sent, unacknowledged packet out again at once when an answer was lost", () => {
  const outbox = new Outbox();
  for (let i = 0; i < 3; i++) outbox.push(bytes(i));
  outbox.take(BATCH_MAX_BYTES, 0);
  outbox.ack(1);
  assert.equal(outbox.due(1), 0, "nothing is due while the answers are out");
  outbox.giveBackAll();
  assert.deepEqual(outbox.take(BATCH_MAX_BYTES, 2).map((packet) => packet.seq), [1, 2]);
});

Deno.test("the outbox's window holds writers until acknowledgements free it", async () => {
  const outbox = new Outbox();
  for (let i = 0; i < WINDOW_PACKETS; i++) outbox.push(bytes(i));
  assert.ok(outbox.full);
  let room = false;
  const waiting = outbox.whenRoom().then(() => room = true);
  await Promise.resolve();
  assert.equal(room, false);
  outbox.ack(1);
  await waiting;
  assert.ok(room);
});

Deno.test("the inbox delivers in order once, keeps early packets in the window, drops the rest", () => {
  const inbox = new Inbox();
  assert.deepEqual(inbox.accept([{ seq: 1, data: bytes(1) }]), []);
  assert.deepEqual(inbox.accept([{ seq: WINDOW_PACKETS + 5, data: bytes(9) }]), []);
  assert.deepEqual(inbox.accept([{ seq: 0, data: bytes(0) }, { seq: 0, data: bytes(0) }]), [
    bytes(0),
    bytes(1),
  ]);
  assert.deepEqual(inbox.accept([{ seq: 1, data: bytes(1) }]), [], "a duplicate is dropped");
  assert.equal(inbox.expected, 2);
});
