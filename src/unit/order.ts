// Ordering of declared steps (dump phases, restore phases, unit loads): each
// names what must come before it (`after`) or what it must precede (`before`).
// The order is derived from those declarations, never from list position
// (list position only breaks ties, so the result is deterministic).

export interface Ordered {
  readonly name: string;
  readonly after?: readonly string[];
  readonly before?: readonly string[];
}

/** A topological order of `items`; throws on a cycle, a duplicate or an unknown name. */
export function order<T extends Ordered>(items: readonly T[], what: string): T[] {
  const byName = new Map<string, T>();
  for (const it of items) {
    if (byName.has(it.name)) throw new Error(`${what}: '${it.name}' is declared twice`);
    byName.set(it.name, it);
  }
  const deps = new Map<string, Set<string>>(items.map((it) => [it.name, new Set<string>()]));
  for (const it of items) {
    for (const a of it.after ?? []) {
      if (!byName.has(a)) throw new Error(`${what}: '${it.name}' comes after unknown '${a}'`);
      deps.get(it.name)!.add(a);
    }
    for (const b of it.before ?? []) {
      if (!byName.has(b)) throw new Error(`${what}: '${it.name}' comes before unknown '${b}'`);
      deps.get(b)!.add(it.name);
    }
  }
  const done = new Set<string>();
  const out: T[] = [];
  while (out.length < items.length) {
    const next = items.find((it) => !done.has(it.name) && [...deps.get(it.name)!].every((d) => done.has(d)));
    if (!next) {
      const left = items.filter((it) => !done.has(it.name)).map((it) => it.name);
      throw new Error(`${what}: the order of ${left.join(', ')} has a cycle`);
    }
    done.add(next.name);
    out.push(next);
  }
  return out;
}
