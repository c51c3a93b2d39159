-- Layer B foreign keys, with drizzle's constraint names. Like the real 0000 migration, no foreign-key column
-- is indexed: the 001 refactor adds those indexes.

ALTER TABLE therapist_profiles ADD CONSTRAINT therapist_profiles_user_id_users_auth_id_fk
    FOREIGN KEY (user_id) REFERENCES users_auth(id) ON DELETE CASCADE;
ALTER TABLE therapist_phi ADD CONSTRAINT therapist_phi_user_id_users_auth_id_fk
    FOREIGN KEY (user_id) REFERENCES users_auth(id) ON DELETE CASCADE;
ALTER TABLE clients_hipaa ADD CONSTRAINT clients_hipaa_therapist_id_users_auth_id_fk
    FOREIGN KEY (therapist_id) REFERENCES users_auth(id) ON DELETE CASCADE;
ALTER TABLE sessions_hipaa ADD CONSTRAINT sessions_hipaa_therapist_id_users_auth_id_fk
    FOREIGN KEY (therapist_id) REFERENCES users_auth(id) ON DELETE CASCADE;
ALTER TABLE sessions_hipaa ADD CONSTRAINT sessions_hipaa_client_id_clients_hipaa_id_fk
    FOREIGN KEY (client_id) REFERENCES clients_hipaa(id) ON DELETE CASCADE;
ALTER TABLE treatment_plans_hipaa ADD CONSTRAINT treatment_plans_hipaa_therapist_id_users_auth_id_fk
    FOREIGN KEY (therapist_id) REFERENCES users_auth(id) ON DELETE CASCADE;
ALTER TABLE treatment_plans_hipaa ADD CONSTRAINT treatment_plans_hipaa_client_id_clients_hipaa_id_fk
    FOREIGN KEY (client_id) REFERENCES clients_hipaa(id) ON DELETE CASCADE;
ALTER TABLE audit_logs_hipaa ADD CONSTRAINT audit_logs_hipaa_user_id_users_auth_id_fk
    FOREIGN KEY (user_id) REFERENCES users_auth(id);
