// Conversations, kept only in this browser's local storage, one list per API key id.
// Nothing here is sent to the server except the messages of the conversation being answered.

const PREFIX = "sovllm.conversations.";

export class ConversationStore {
  constructor(owner) {
    this.slot = PREFIX + owner;
  }

  all() {
    try {
      const list = JSON.parse(localStorage.getItem(this.slot) || "[]");
      return Array.isArray(list) ? list.sort((a, b) => b.updated - a.updated) : [];
    } catch {
      return [];
    }
  }

  get(id) {
    return this.all().find((c) => c.id === id) ?? null;
  }

  save(conversation) {
    conversation.updated = Date.now();
    const rest = this.all().filter((c) => c.id !== conversation.id);
    this.write([conversation, ...rest]);
  }

  remove(id) {
    this.write(this.all().filter((c) => c.id !== id));
  }

  clear() {
    localStorage.removeItem(this.slot);
  }

  write(list) {
    try {
      localStorage.setItem(this.slot, JSON.stringify(list));
    } catch {
      // Full: drop the oldest conversations until the list fits.
      while (list.length > 1) {
        list.pop();
        try {
          localStorage.setItem(this.slot, JSON.stringify(list));
          return;
        } catch {
          // keep dropping
        }
      }
    }
  }
}

export function newConversation() {
  const id = crypto.randomUUID ? crypto.randomUUID() : `c${Date.now()}${Math.random()}`;
  return { id, title: "New chat", created: Date.now(), updated: Date.now(), messages: [] };
}

export function titleFrom(text) {
  const line = text.trim().split("\n")[0];
  return line.length > 60 ? `${line.slice(0, 57)}…` : line || "New chat";
}
