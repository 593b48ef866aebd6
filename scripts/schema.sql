-- The seed's auth schema, the one copy: scripts/services.sh (the sample
-- database), the tests (tests/kit)
-- and make bench (bench/src/setup.rs) create their databases from it.
-- Statements end with ";" at the end of a line; no ";" elsewhere.
CREATE TABLE IF NOT EXISTS app_tb (id INT AUTO_INCREMENT PRIMARY KEY, app_key VARCHAR(45) NOT NULL,
  app_secret VARCHAR(64) NOT NULL, cluster VARCHAR(45) NOT NULL,
  created_at BIGINT NULL, deleted_at BIGINT NULL, updated_at BIGINT NULL);
CREATE TABLE IF NOT EXISTS auth_tb (id INT AUTO_INCREMENT PRIMARY KEY, app_id INT NOT NULL,
  group_name VARCHAR(45) NULL, operation TINYINT DEFAULT 0, topic VARCHAR(45) NOT NULL,
  created_at BIGINT NULL, deleted_at BIGINT NULL, updated_at BIGINT NULL);
