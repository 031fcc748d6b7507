-- The bundled demo database of the `database` builder (dummy_data/database/demo.sqlite).
-- Regenerate: rm demo.sqlite && sqlite3 demo.sqlite < demo.sql
--   (or: python -c "import sqlite3; sqlite3.connect('demo.sqlite').executescript(open('demo.sql').read())")
-- Penguin measurements in the style of the Palmer Penguins data; NULLs are
-- deliberate: a missing bill length, body mass, sex or comment.
CREATE TABLE penguins (
  id INTEGER PRIMARY KEY,
  species TEXT NOT NULL,
  island TEXT NOT NULL,
  bill_length_mm REAL,
  body_mass_g INTEGER,
  sex TEXT,
  observed_on DATE NOT NULL,
  is_adult BOOLEAN NOT NULL,
  comment TEXT
);
INSERT INTO penguins VALUES
  (1, 'Adelie', 'Torgersen', 39.1, 3750, 'male', '2007-11-11', 1, NULL),
  (2, 'Adelie', 'Torgersen', 39.5, 3800, 'female', '2007-11-11', 1, NULL),
  (3, 'Adelie', 'Torgersen', 40.3, 3250, 'female', '2007-11-16', 1, NULL),
  (4, 'Adelie', 'Torgersen', NULL, NULL, NULL, '2007-11-16', 1, 'Adult not sampled.'),
  (5, 'Adelie', 'Biscoe', 37.8, 3400, 'female', '2007-11-09', 1, NULL),
  (6, 'Adelie', 'Dream', 39.5, 3250, 'female', '2007-11-09', 1, NULL),
  (7, 'Adelie', 'Dream', 37.2, 3900, 'male', '2008-11-09', 0, 'Juvenile.'),
  (8, 'Adelie', 'Biscoe', 40.6, 4400, 'male', '2008-11-13', 1, NULL),
  (9, 'Adelie', 'Torgersen', 34.6, 4400, 'male', '2009-11-13', 1, NULL),
  (10, 'Adelie', 'Torgersen', 42.5, 4500, NULL, '2009-11-13', 1, 'Sex not determined.'),
  (11, 'Gentoo', 'Biscoe', 46.1, 4500, 'female', '2007-11-27', 1, NULL),
  (12, 'Gentoo', 'Biscoe', 50.0, 5700, 'male', '2007-11-27', 1, NULL),
  (13, 'Gentoo', 'Biscoe', 48.7, 4450, 'female', '2007-11-18', 1, NULL),
  (14, 'Gentoo', 'Biscoe', 50.0, 5700, 'male', '2008-11-18', 1, NULL),
  (15, 'Gentoo', 'Biscoe', 47.6, NULL, 'male', '2008-11-27', 1, 'Scale failed.'),
  (16, 'Gentoo', 'Biscoe', 46.5, 4550, 'female', '2009-11-27', 0, NULL),
  (17, 'Gentoo', 'Biscoe', 45.4, 4800, 'female', '2009-11-17', 1, NULL),
  (18, 'Chinstrap', 'Dream', 46.5, 3500, 'female', '2007-11-19', 1, NULL),
  (19, 'Chinstrap', 'Dream', 50.0, 3900, 'male', '2007-11-19', 1, NULL),
  (20, 'Chinstrap', 'Dream', 51.3, 3650, 'male', '2008-11-24', 1, NULL),
  (21, 'Chinstrap', 'Dream', NULL, 3525, 'female', '2008-11-24', 1, 'Bill damaged.'),
  (22, 'Chinstrap', 'Dream', 52.7, 3725, 'male', '2009-11-25', 1, NULL),
  (23, 'Chinstrap', 'Anvers', 45.2, 3650, 'female', '2009-11-25', 0, 'Visitor from Anvers.'),
  (24, 'Adelie', 'Dream', 36.4, 3100, 'female', '2009-11-21', 1, NULL);
