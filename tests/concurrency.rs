//! Many programs at once on one mount: writers, readers, renames and
//! listings in parallel; every file ends exactly as its writer left it.

mod common;
use common::*;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;

const SMALL: &[&str] = &["--shard-size", "4096", "--inline-max", "2048"];

#[test]
fn parallel_writers_readers_renames_and_listings_agree_with_a_model() {
    let mut t = TestMount::new(6, SMALL);
    fs::create_dir(t.p("bkt")).unwrap();
    let root = Arc::new(t.p("bkt"));
    let mut handles = Vec::new();
    for w in 0..4u64 {
        let root = root.clone();
        handles.push(std::thread::spawn(move || {
            let dir = root.join(format!("w{w}"));
            fs::create_dir(&dir).unwrap();
            let mut model: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
            let mut rng = w * 7919 + 1;
            let mut next = |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            for step in 0..150u64 {
                let name = format!("f{}", next(8));
                let p = dir.join(&name);
                match next(6) {
                    0 | 1 => {
                        let data = pattern(w * 1000 + step, next(60_000) as usize);
                        fs::write(&p, &data).unwrap();
                        model.insert(name, data);
                    }
                    2 => {
                        if let Some(cur) = model.get_mut(&name) {
                            let off = next(cur.len() as u64 + 1);
                            let data = pattern(step, next(20_000) as usize);
                            let mut f = fs::OpenOptions::new().write(true).open(&p).unwrap();
                            f.seek(SeekFrom::Start(off)).unwrap();
                            f.write_all(&data).unwrap();
                            let end = off as usize + data.len();
                            if cur.len() < end {
                                cur.resize(end, 0);
                            }
                            cur[off as usize..end].copy_from_slice(&data);
                        }
                    }
                    3 => {
                        let to = format!("f{}", next(8));
                        if model.contains_key(&name) {
                            fs::rename(&p, dir.join(&to)).unwrap();
                            let v = model.remove(&name).unwrap();
                            model.insert(to, v);
                        }
                    }
                    4 => {
                        if model.remove(&name).is_some() {
                            fs::remove_file(&p).unwrap();
                        }
                    }
                    _ => {
                        if let Some(want) = model.get(&name) {
                            let mut got = Vec::new();
                            fs::File::open(&p).unwrap().read_to_end(&mut got).unwrap();
                            assert!(got == *want, "writer {w} step {step}: {name} differs");
                        }
                    }
                }
            }
            model
        }));
    }
    // a lister and a reader of everything, running alongside
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lister = {
        let root = root.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut listings = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for d in fs::read_dir(&*root).unwrap().flatten() {
                    if let Ok(rd) = fs::read_dir(d.path()) {
                        for f in rd.flatten() {
                            // files come and go; a read either fails with
                            // ENOENT or returns some complete version
                            let _ = fs::read(f.path());
                        }
                    }
                }
                listings += 1;
            }
            listings
        })
    };
    let models: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(lister.join().unwrap() > 0);
    let check = |t: &TestMount| {
        for (w, model) in models.iter().enumerate() {
            let dir = t.p(&format!("bkt/w{w}"));
            let mut names: Vec<String> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            let want: Vec<String> = model.keys().cloned().collect();
            assert_eq!(names, want, "writer {w} directory");
            for (name, data) in model {
                assert!(fs::read(dir.join(name)).unwrap() == *data, "w{w}/{name}");
            }
        }
    };
    check(&t);
    t.remount();
    check(&t);
}
