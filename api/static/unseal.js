// Opens sealed items in the responder's browser (DESIGN.md, "Data protection"): the
// organisation's private key comes from the server only under its passphrase, is unlocked
// here (Argon2id + XSalsa20-Poly1305, as core/sealing.py protects it), lives in this page's
// memory only, and never goes back. Every text is set with textContent, never as HTML.
import sodium from "./vendor/libsodium-wrappers.js";

const PROTECTED = [0x50, 0x31]; // "P1": magic, u32 opslimit, u64 memlimit, salt, secretbox

function unprotect(blob, passphrase) {
  if (blob[0] !== PROTECTED[0] || blob[1] !== PROTECTED[1]) return null;
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const ops = view.getUint32(2);
  const mem = Number(view.getBigUint64(6));
  const saltEnd = 14 + sodium.crypto_pwhash_SALTBYTES;
  const salt = blob.subarray(14, saltEnd);
  const box = blob.subarray(saltEnd);
  const nonce = box.subarray(0, sodium.crypto_secretbox_NONCEBYTES);
  let key;
  try {
    key = sodium.crypto_pwhash(
      sodium.crypto_secretbox_KEYBYTES, passphrase, salt, ops, mem,
      sodium.crypto_pwhash_ALG_ARGON2ID13,
    );
  } catch {
    return null; // this key's parameters are beyond this device (memory): try the others
  }
  try {
    return sodium.crypto_secretbox_open_easy(
      box.subarray(sodium.crypto_secretbox_NONCEBYTES), nonce, key,
    );
  } catch {
    return null; // a wrong passphrase
  } finally {
    sodium.memzero(key);
  }
}

function fromBase64(text) {
  return sodium.from_base64(text, sodium.base64_variants.ORIGINAL);
}

// The plaintext carries its organisation, record and kind: an item moved to another record
// opens, but is refused (core.sealing.open_sealed does the same).
function openBlob(blob, record, kind, keys, org) {
  for (const k of keys) {
    let plain;
    try {
      plain = sodium.crypto_box_seal_open(blob, k.publicKey, k.privateKey);
    } catch {
      continue; // sealed to another key version
    }
    let data = null;
    try {
      data = JSON.parse(sodium.to_string(plain));
    } catch {
      return { foreign: true }; // anyone may seal to a public key: not Amparo's layout
    }
    const bound = data !== null && data.org === org && data.record === record
      && data.kind === kind && "body" in data;
    return bound ? { body: data.body } : { foreign: true };
  }
  return null;
}

function open(item, keys, org) {
  const { record, kind } = item.dataset;
  return openBlob(fromBase64(item.dataset.sealed), record, kind, keys, org);
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// Coordinates read left to right on every page: in Arabic's right-to-left flow the bidi
// algorithm would move a longitude's minus sign to its end and swap the pair around.
function mapLink(spot, labels) {
  const link = element("a",
    `${Number(spot.latitude).toFixed(5)}, ${Number(spot.longitude).toFixed(5)}`);
  link.dir = "ltr";
  link.href = `geo:${Number(spot.latitude)},${Number(spot.longitude)}`;
  link.title = labels.map;
  return link;
}

// What a defender wrote, in whatever script: laid out by its own first strong letter, not the
// page's (Spanish on an Arabic page keeps its full stop at the end, and Arabic on an English one).
function written(tag, text) {
  const node = element(tag, text);
  node.dir = "auto";
  return node;
}

// A report: its coded answers, then each part the defender sent, sealed on arrival inside it.
function showReport(item, body, context) {
  const { labels, keys, org } = context;
  const words = JSON.parse(labels.labels || "{}");
  const fields = words.fields || {};
  const answers = words.answers || {};
  const say = (value) => (value in answers ? answers[value] : String(value));
  const facts = element("dl", undefined, "facts");
  const fact = (key, value) => {
    if (value === null || value === undefined || value === "") return;
    facts.append(element("dt", fields[key] || key), element("dd", value));
  };
  const act = body.type_of_act || {};
  fact("type_of_act", act.answer ? `${say(act.answer)}${act.code ? ` (${act.code})` : ""}` : "");
  fact("initial_date", body.initial_date);
  fact("perpetrator_type", body.perpetrator_type ? say(body.perpetrator_type) : "");
  fact("affected", body.affected ? say(body.affected) : "");
  // A number that was one of the defender's PINs (flows/report.py): not kept, and said so.
  fact("count", body.count_withheld ? fields.withheld || "withheld" : body.count);
  fact("consent", body.consent ? say(body.consent) : "");
  fact("priority", body.priority ? say(body.priority) : "");
  const languages = words.languages || {};
  fact("language", body.language ? languages[body.language] || String(body.language) : "");
  item.append(facts);
  for (const part of body.parts || []) {
    const opened = openBlob(fromBase64(part), item.dataset.record, "report.part", keys, org);
    if (opened === null || opened.foreign) { // never dropped silently: the desk must know
      item.append(element("p", opened === null ? labels.failed : labels.foreign, "refused"));
      continue;
    }
    const piece = opened.body || {};
    const block = element("div", undefined, "part");
    if ("text" in piece) {
      const heading = piece.correction ? fields.correction || "correction"
        : "caption" in piece ? fields.caption || "caption" : fields.text || "text";
      block.append(element("h3", heading), written("p", String(piece.text)));
    } else if ("place" in piece) {
      block.append(element("h3", fields.place || "place"), written("p", String(piece.place)));
    } else if ("location" in piece) {
      block.append(element("h3", fields.location || "location"), mapLink(piece.location, labels));
    } else if ("withheld" in piece) { // a PIN typed as an answer (flows/report.py)
      block.append(element("p", fields.withheld || "withheld", "withheld"));
    } else {
      block.append(element("pre", JSON.stringify(piece, null, 2)));
    }
    item.append(block);
  }
  // The files the report listed when it was filed: one the page lacks was deleted or held
  // back by whoever holds the server. Sealing proves what is here, only this what is not.
  const handed = new Set(Array.from(
    document.querySelectorAll("[data-kind='report.evidence']"), (e) => e.dataset.record,
  ));
  if (!Array.isArray(body.evidence)) return;
  const listed = new Set(body.evidence.map(String));
  for (const id of listed) {
    if (!handed.has(id)) item.append(element("p", labels.missing, "refused"));
  }
  // A file the report does not list: anyone with the public key can seal one naming this
  // report, but not add it to the list sealed with the defender's report. Refused below.
  for (const file of document.querySelectorAll("[data-kind='report.evidence']")) {
    if (!listed.has(file.dataset.record)) file.dataset.unlisted = "true";
  }
}

// What a file name may not carry, shown or as a download name: control characters, bidi
// overrides, isolates and marks ("statement\u202egpj.exe" reads "statementexe.jpg"), line
// separators, lone surrogates. The server cleans names on receipt (core.text.file_name), but
// a file sealed before that, or by anything else holding the public key, is not trusted.
const UNSAFE_IN_NAMES =
  /[\p{Cc}\p{Cs}\p{Zl}\p{Zp}\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu;

function safeName(name) { // cut first: half a surrogate pair left at the end goes too
  return String(name || "").slice(0, 255).replace(UNSAFE_IN_NAMES, "").trim();
}

// One evidence file: what it is, its hash on receipt, a metadata-free preview, the original.
// Its plaintext names its report: a file moved to another report is refused.
function showEvidence(item, body, context) {
  if (body.report !== item.dataset.report || item.dataset.unlisted) {
    item.textContent = context.labels.foreign;
    item.classList.add("refused");
    return;
  }
  const words = JSON.parse(context.labels.labels || "{}");
  const fields = words.fields || {};
  const type = String(body.content_type || "application/octet-stream");
  const name = safeName(body.filename) || `${fields.file || "file"} ${body.sha256 || ""}`.trim();
  item.append(element("p", `${name} · ${type} · ${Number(body.size || 0)} B`));
  item.append(element("p", `${fields.sha256 || "SHA-256"}: ${body.sha256 || ""}`, "hash"));
  if (body.preview) { // always a JPEG stripped of EXIF, GPS and XMP (core/media.py)
    const img = element("img");
    img.src = `data:image/jpeg;base64,${body.preview}`;
    img.alt = name;
    item.append(img);
  }
  if (body.original) {
    const bytes = fromBase64(String(body.original));
    const link = element("a", fields.download || "download");
    link.href = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
    link.download = name;
    const line = element("p");
    line.append(link);
    item.append(line);
  }
}

function show(item, body, context) {
  item.replaceChildren();
  const kind = item.dataset.kind;
  if (kind === "alert_location" && body && "latitude" in body) {
    item.append(mapLink(body, context.labels));
  } else if (kind === "report" && body && typeof body === "object") {
    showReport(item, body, context);
  } else if (kind === "report.evidence" && body && typeof body === "object") {
    showEvidence(item, body, context);
  } else if (kind === "alert_note" && body && typeof body === "object") {
    // Its plaintext names its alert: a note moved to another alert is refused.
    const here = body.alert === item.dataset.alert;
    item.textContent = here ? String(body.text) : context.labels.foreign;
    if (here) item.dir = "auto";
    else item.classList.add("refused");
  } else if (typeof body === "string") {
    item.textContent = body;
  } else {
    item.textContent = JSON.stringify(body, null, 2);
  }
  item.classList.add("opened");
}

async function unseal(form) {
  const status = form.querySelector(".status");
  const input = form.querySelector("input.passphrase");
  const labels = form.dataset;
  const passphrase = input.value;
  input.value = "";
  status.textContent = labels.working;
  await sodium.ready;
  const answer = await fetch("/api/v1/org/keys", { headers: { accept: "application/json" } });
  if (!answer.ok) {
    status.textContent = labels.failed;
    return;
  }
  const keys = [];
  for (const k of await answer.json()) {
    const privateKey = unprotect(fromBase64(k.protected_private_key), passphrase);
    if (privateKey) keys.push({ publicKey: fromBase64(k.public_key), privateKey });
  }
  if (keys.length === 0) {
    status.textContent = labels.wrong;
    return;
  }
  let opened = 0;
  for (const item of document.querySelectorAll("[data-sealed]")) {
    const result = open(item, keys, form.dataset.org);
    if (result === null) continue;
    if (result.foreign) {
      item.textContent = labels.foreign;
      item.classList.add("refused");
    } else {
      show(item, result.body, { labels, keys, org: form.dataset.org });
      opened += 1;
    }
  }
  for (const k of keys) sodium.memzero(k.privateKey);
  status.textContent = labels.done;
  form.dataset.opened = String(opened);
}

const form = document.querySelector("form.unseal");
if (form) {
  form.hidden = false; // shown only once this script runs (see _unseal.html)
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    unseal(form).catch((error) => {
      form.querySelector(".status").textContent = form.dataset.failed;
      console.error(error); // a bug, not a wrong passphrase: the tests watch for these
    });
  });
}
