-- Sample database for databus: one app and one auth rule on topic test156.
-- Idempotent: safe to load any number of times (scripts/services.sh up does).
CREATE DATABASE IF NOT EXISTS databus_db;
USE databus_db;
CREATE TABLE IF NOT EXISTS app_tb  (id INT AUTO_INCREMENT PRIMARY KEY, app_key VARCHAR(45) NOT NULL,
  app_secret VARCHAR(64) NOT NULL, cluster VARCHAR(45) NOT NULL,
  created_at BIGINT NULL, deleted_at BIGINT NULL, updated_at BIGINT NULL);
CREATE TABLE IF NOT EXISTS auth_tb (id INT AUTO_INCREMENT PRIMARY KEY, app_id INT NOT NULL,
  group_name VARCHAR(45) NULL, operation TINYINT DEFAULT 0, topic VARCHAR(45) NOT NULL,
  created_at BIGINT NULL, deleted_at BIGINT NULL, updated_at BIGINT NULL);
INSERT IGNORE INTO app_tb  (id,app_key,app_secret,cluster) VALUES (1,'app_key1','app_secret1','cluster1');
INSERT IGNORE INTO auth_tb (id,app_id,group_name,operation,topic) VALUES (1,1,'group_name1',3,'test156');
