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
  const key = sodium.crypto_pwhash(
    sodium.crypto_secretbox_KEYBYTES, passphrase, salt, ops, mem,
    sodium.crypto_pwhash_ALG_ARGON2ID13,
  );
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
function open(item, keys, org) {
  const blob = fromBase64(item.dataset.sealed);
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
    const bound = data !== null && data.org === org && data.record === item.dataset.record
      && data.kind === item.dataset.kind && "body" in data;
    return bound ? { body: data.body } : { foreign: true };
  }
  return null;
}

function show(item, body, labels) {
  item.replaceChildren();
  if (item.dataset.kind === "alert_location" && body && "latitude" in body) {
    const where = `${Number(body.latitude).toFixed(5)}, ${Number(body.longitude).toFixed(5)}`;
    const link = document.createElement("a");
    link.href = `geo:${Number(body.latitude)},${Number(body.longitude)}`;
    link.textContent = where;
    link.title = labels.map;
    item.append(link);
  } else if (typeof body === "string") {
    item.textContent = body;
  } else {
    item.textContent = JSON.stringify(body, null, 2);
  }
  item.classList.add("opened");
}

async function unseal(form) {
  const status = form.querySelector(".status");
  const input = form.querySelector("input[name=passphrase]");
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
      show(item, result.body, labels);
      opened += 1;
    }
  }
  for (const k of keys) sodium.memzero(k.privateKey);
  status.textContent = labels.done;
  form.dataset.opened = String(opened);
}

const form = document.querySelector("form.unseal");
if (form) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    unseal(form).catch(() => {
      form.querySelector(".status").textContent = form.dataset.failed;
    });
  });
}
