//! Ordinary programs on the mount: sqlite3, git, tar, rsync.

mod common;
use common::*;

#[test]
fn sqlite3_database_passes_integrity_check() {
    let mut t = TestMount::new(6, &[]);
    std::fs::create_dir(t.p("dbs")).unwrap();
    let dir = t.p("dbs");
    sh(
        &dir,
        "sqlite3 test.db 'PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);' >/dev/null",
    );
    let mut sql = String::from("BEGIN;");
    for i in 0..5000 {
        sql.push_str(&format!("INSERT INTO t(v) VALUES (printf('%0500d', {i}));"));
    }
    sql.push_str("COMMIT; DELETE FROM t WHERE id % 3 = 0; VACUUM;");
    std::fs::write(t.tmp.path().join("load.sql"), &sql).unwrap();
    sh(
        &dir,
        &format!(
            "sqlite3 test.db < {}",
            t.tmp.path().join("load.sql").display()
        ),
    );
    assert_eq!(
        sh(&dir, "sqlite3 test.db 'PRAGMA integrity_check;'").trim(),
        "ok"
    );
    assert_eq!(
        sh(&dir, "sqlite3 test.db 'SELECT count(*) FROM t;'").trim(),
        "3334"
    );
    t.remount();
    assert_eq!(
        sh(&t.p("dbs"), "sqlite3 test.db 'PRAGMA integrity_check;'").trim(),
        "ok"
    );
    assert_eq!(
        sh(&t.p("dbs"), "sqlite3 test.db 'SELECT count(*) FROM t;'").trim(),
        "3334"
    );
}

#[test]
fn git_commit_and_fsck() {
    let mut t = TestMount::new(6, &[]);
    std::fs::create_dir(t.p("code")).unwrap();
    let dir = t.p("code");
    sh(&dir, "git init -q repo");
    let repo = dir.join("repo");
    for i in 0..50 {
        std::fs::write(
            repo.join(format!("file{i}.txt")),
            pattern(i, 1000 + (i as usize) * 3000),
        )
        .unwrap();
    }
    sh(
        &repo,
        "git add -A && git -c user.name=t -c user.email=t@e commit -qm one && \
         echo change >> file3.txt && git mv file4.txt moved.txt && \
         git -c user.name=t -c user.email=t@e commit -qam two && git gc -q && git fsck --full --strict",
    );
    t.remount();
    let repo = t.p("code/repo");
    sh(
        &repo,
        "git fsck --full --strict && git status --porcelain | wc -l | grep -qx 0",
    );
    assert_eq!(sh(&repo, "git log --oneline | wc -l").trim(), "2");
}

#[test]
fn tar_extract_then_compare() {
    let t = TestMount::new(6, &[]);
    std::fs::create_dir(t.p("tarb")).unwrap();
    // a source tree with files across sizes, links and empty dirs
    let src = t.tmp.path().join("src");
    std::fs::create_dir_all(src.join("a/b/empty")).unwrap();
    for i in 0..200u64 {
        std::fs::write(
            src.join(format!("a/f{i}")),
            pattern(i, (i as usize * 997) % 300_000),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("f1", src.join("a/link")).unwrap();
    std::fs::hard_link(src.join("a/f2"), src.join("a/b/hard")).unwrap();
    let tarball = t.tmp.path().join("src.tar");
    sh(
        t.tmp.path(),
        &format!("tar -cf {} -C {} .", tarball.display(), src.display()),
    );
    sh(&t.p("tarb"), &format!("tar -xpf {}", tarball.display()));
    sh(
        t.tmp.path(),
        &format!(
            "diff -r --no-dereference {} {}",
            src.display(),
            t.p("tarb").display()
        ),
    );
    // the hard link is one inode
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(t.p("tarb/a/f2")).unwrap().ino(),
        std::fs::metadata(t.p("tarb/a/b/hard")).unwrap().ino()
    );
}

#[test]
fn rsync_archive_then_compare_and_nothing_to_do_the_second_time() {
    let t = TestMount::new(6, &[]);
    std::fs::create_dir(t.p("sync")).unwrap();
    let src = t.tmp.path().join("rs");
    std::fs::create_dir_all(src.join("x/y")).unwrap();
    for i in 0..100u64 {
        std::fs::write(
            src.join(format!("x/f{i}")),
            pattern(i, (i as usize * 4099) % 200_000),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("../x/f1", src.join("x/y/l")).unwrap();
    sh(
        t.tmp.path(),
        &format!("rsync -aHX {}/ {}/", src.display(), t.p("sync").display()),
    );
    sh(
        t.tmp.path(),
        &format!(
            "diff -r --no-dereference {} {}",
            src.display(),
            t.p("sync").display()
        ),
    );
    // -a kept times and modes: a second run transfers nothing
    let out = sh(
        t.tmp.path(),
        &format!(
            "rsync -aHX --itemize-changes {}/ {}/",
            src.display(),
            t.p("sync").display()
        ),
    );
    assert_eq!(out.trim(), "", "second rsync had work to do: {out}");
}
