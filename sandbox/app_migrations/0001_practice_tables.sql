-- The sandbox app's own migrations, run by its start command before every start on the new schema, as the
-- real app's deploy does (target-app.md section 12). Written for the sandbox: a handful of the tables the real
-- app's start creates, with the foreign keys that matter to a rollback (to organizations, patients, users_auth,
-- clinical_sessions and to each other). Idempotent: every start runs it again and it changes nothing.

CREATE TABLE IF NOT EXISTS organization_invites (
    id serial PRIMARY KEY,
    organization_id integer NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    invited_by integer NOT NULL REFERENCES users_auth (id) ON DELETE CASCADE,
    invitee_email text NOT NULL,
    role text NOT NULL,
    token text NOT NULL UNIQUE,
    status text DEFAULT 'pending',
    expires_at timestamp NOT NULL,
    created_at timestamp DEFAULT now()
);
CREATE INDEX IF NOT EXISTS organization_invites_organization_idx ON organization_invites (organization_id);
CREATE INDEX IF NOT EXISTS organization_invites_invited_by_idx ON organization_invites (invited_by);

CREATE TABLE IF NOT EXISTS document_templates (
    id serial PRIMARY KEY,
    organization_id integer REFERENCES organizations (id) ON DELETE CASCADE,
    title text NOT NULL,
    body text,
    created_by integer REFERENCES users_auth (id),
    created_at timestamp DEFAULT now()
);
CREATE INDEX IF NOT EXISTS document_templates_organization_idx ON document_templates (organization_id);

CREATE TABLE IF NOT EXISTS documents (
    id serial PRIMARY KEY,
    organization_id integer NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    patient_id integer NOT NULL REFERENCES patients (id) ON DELETE RESTRICT,
    template_id integer REFERENCES document_templates (id) ON DELETE SET NULL,
    title text NOT NULL,
    status text DEFAULT 'draft',
    created_by integer NOT NULL REFERENCES users_auth (id),
    created_at timestamp DEFAULT now()
);
CREATE INDEX IF NOT EXISTS documents_organization_idx ON documents (organization_id);
CREATE INDEX IF NOT EXISTS documents_patient_idx ON documents (patient_id);

CREATE TABLE IF NOT EXISTS meeting_types (
    id serial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users_auth (id) ON DELETE CASCADE,
    organization_id integer REFERENCES organizations (id) ON DELETE CASCADE,
    name text NOT NULL,
    color text NOT NULL DEFAULT '#888888'
);

CREATE TABLE IF NOT EXISTS meetings (
    id serial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users_auth (id) ON DELETE CASCADE,
    organization_id integer REFERENCES organizations (id) ON DELETE CASCADE,
    type_id integer REFERENCES meeting_types (id) ON DELETE SET NULL,
    title text NOT NULL,
    starts_at timestamp NOT NULL,
    minutes integer NOT NULL DEFAULT 60
);

CREATE TABLE IF NOT EXISTS tasks (
    id serial PRIMARY KEY,
    organization_id integer NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    created_by_user_id integer NOT NULL REFERENCES users_auth (id) ON DELETE CASCADE,
    assigned_to_user_id integer REFERENCES users_auth (id) ON DELETE SET NULL,
    patient_id integer REFERENCES patients (id) ON DELETE CASCADE,
    session_id integer REFERENCES clinical_sessions (id) ON DELETE SET NULL,
    title text NOT NULL,
    status text DEFAULT 'pending',
    due_at timestamp,
    created_at timestamp DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tasks_organization_idx ON tasks (organization_id);
CREATE INDEX IF NOT EXISTS tasks_patient_idx ON tasks (patient_id);
