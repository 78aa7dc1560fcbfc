// Our image schema against CRIU's own: every message we declare, field by
// field (name, number, label, type), and every image magic, compared with
// the descriptors of Debian's pycriu (package criu), which are generated from
// CRIU's images/*.proto (and rpc.proto: pycriu.rpc_pb2, the criu swrk
// messages).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { SCHEMA, EXTENSIONS, NEWER_UPSTREAM, type MsgName } from '../src/images/schema';
import { RPC_NEWER_THAN_PYCRIU } from '../src/images/rpc-schema';
import { describeMessage } from '../src/images/codec';
import { MAGIC } from '../src/images/magic';

const DUMP = `
import json, pkgutil, importlib, sys
import pycriu.images as imgs
from pycriu.images import magic
from google.protobuf.descriptor import FieldDescriptor as F
TYPES = {F.TYPE_DOUBLE:'double',F.TYPE_FLOAT:'float',F.TYPE_INT64:'int64',F.TYPE_UINT64:'uint64',F.TYPE_INT32:'int32',
  F.TYPE_FIXED64:'fixed64',F.TYPE_FIXED32:'fixed32',F.TYPE_BOOL:'bool',F.TYPE_STRING:'string',F.TYPE_BYTES:'bytes',
  F.TYPE_UINT32:'uint32',F.TYPE_SFIXED32:'sfixed32',F.TYPE_SFIXED64:'sfixed64',F.TYPE_SINT32:'sint32',F.TYPE_SINT64:'sint64'}
LABELS = {F.LABEL_OPTIONAL:'optional',F.LABEL_REQUIRED:'required',F.LABEL_REPEATED:'repeated'}
msgs = {}
def walk(d):
    fields = {}
    for f in d.fields:
        t = f.message_type.name if f.type == F.TYPE_MESSAGE else f.enum_type.name if f.type == F.TYPE_ENUM else TYPES[f.type]
        fields[f.name] = [f.number, LABELS[f.label], t]
    msgs.setdefault(d.name, fields)
    for n in d.nested_types: walk(n)
for m in pkgutil.iter_modules(imgs.__path__):
    if not m.name.endswith('_pb2'): continue
    mod = importlib.import_module('pycriu.images.' + m.name)
    for d in mod.DESCRIPTOR.message_types_by_name.values(): walk(d)
import pycriu.rpc_pb2 as rpc
for d in rpc.DESCRIPTOR.message_types_by_name.values(): walk(d)
json.dump({'messages': msgs, 'magic': magic.by_name}, sys.stdout)
`;

function upstream(): { messages: Record<string, Record<string, [number, string, string]>>; magic: Record<string, number> } {
  const r = spawnSync('python3', ['-c', DUMP], { encoding: 'utf8', env: { ...process.env, PYTHONPATH: '/usr/lib/python3/dist-packages' }, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`reading pycriu's descriptors failed (is Debian's criu installed?): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

test('every field of every message we declare is CRIU\'s: name, number, label, type', () => {
  const up = upstream();
  const problems: string[] = [];
  for (const name of Object.keys(SCHEMA.messages) as MsgName[]) {
    // A message newer than this pycriu: every field of it is in NEWER_UPSTREAM, compared below.
    const newerMessage = describeMessage(name).every((f) => NEWER_UPSTREAM[`${name}.${f.name}`]);
    const theirs = up.messages[name] ?? (newerMessage ? {} : undefined);
    if (!theirs) { problems.push(`${name}: no such message upstream`); continue; }
    for (const f of describeMessage(name)) {
      const t = theirs[f.name];
      if (EXTENSIONS[`${name}.${f.name}`]) {
        // Ours, in a number upstream leaves free (reserved for it).
        const clash = Object.entries(theirs).find(([, x]) => x[0] === f.num);
        if (t || clash) problems.push(`${name}.${f.name}: declared an extension, but upstream has field ${t ? f.name : clash![0]}`);
        continue;
      }
      const newer = NEWER_UPSTREAM[`${name}.${f.name}`] ?? RPC_NEWER_THAN_PYCRIU[`${name}.${f.name}`];
      if (!t && newer) {
        // Newer than this pycriu: compare with CRIU 4.2's declaration, and no clash here.
        const clash = Object.entries(theirs).find(([, x]) => x[0] === f.num);
        if (clash) problems.push(`${name}.${f.name}: number ${f.num} is ${clash[0]} in pycriu`);
        if (newer !== `${f.label} ${f.type} ${f.num}`) problems.push(`${name}.${f.name}: ${f.label} ${f.type} ${f.num}, CRIU 4.2 ${newer}`);
        continue;
      }
      if (!t) { problems.push(`${name}.${f.name}: no such field upstream`); continue; }
      const [num, label, type] = t;
      if (num !== f.num) problems.push(`${name}.${f.name}: number ${f.num}, upstream ${num}`);
      if (label !== f.label) problems.push(`${name}.${f.name}: ${f.label}, upstream ${label}`);
      if (type !== f.type) problems.push(`${name}.${f.name}: type ${f.type}, upstream ${type}`);
    }
  }
  assert.deepEqual(problems, []);
});

test('every image magic is CRIU\'s', () => {
  const up = upstream();
  const problems = Object.entries(MAGIC).filter(([k, v]) => up.magic[k] !== v).map(([k, v]) => `${k}: 0x${v.toString(16)}, upstream ${up.magic[k]}`);
  assert.deepEqual(problems, []);
});
