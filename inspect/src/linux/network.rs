//! Network configuration as the guest's own tools would read it: ifupdown, netplan,
//! NetworkManager keyfiles, RHEL/SUSE ifcfg and systemd-networkd. Only what a migration needs:
//! which interfaces are configured, how (static or DHCP), with which addresses, and whether a MAC
//! address pins the configuration to the old NIC.

use serde::Serialize;

/// Most lines or interfaces read from one file (house style S12).
const MAX_LINES: usize = 8192;

/// The configuration system a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetStyle {
    /// Debian's `/etc/network/interfaces`.
    Ifupdown,
    /// Ubuntu's `/etc/netplan/*.yaml`.
    Netplan,
    /// NetworkManager keyfiles in `/etc/NetworkManager/system-connections/`.
    NetworkManager,
    /// RHEL `/etc/sysconfig/network-scripts/ifcfg-*`.
    RhelIfcfg,
    /// SUSE wicked `/etc/sysconfig/network/ifcfg-*`.
    SuseWicked,
    /// `/etc/systemd/network/*.network`.
    SystemdNetworkd,
    /// Windows `Tcpip\Parameters\Interfaces\{GUID}` in the SYSTEM hive.
    WindowsTcpip,
}

/// How an interface gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Fixed addresses.
    Static,
    /// DHCP (v4 or v6).
    Dhcp,
    /// Loopback, manual, or unknown.
    Other,
}

/// One configured interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetIface {
    /// Which system configures it.
    pub style: NetStyle,
    /// The guest file it comes from.
    pub file: String,
    /// Interface name (may be empty when only a MAC selects the device).
    pub name: String,
    /// MAC address the configuration is pinned to, lowercase.
    pub mac: Option<String>,
    /// How it gets an address.
    pub method: Method,
    /// Static addresses, as `addr/prefix` when the prefix is known.
    pub addresses: Vec<String>,
    /// Default gateway.
    pub gateway: Option<String>,
}

fn iface(style: NetStyle, file: &str, name: &str) -> NetIface {
    NetIface {
        style,
        file: file.to_owned(),
        name: name.to_owned(),
        mac: None,
        method: Method::Other,
        addresses: Vec::new(),
        gateway: None,
    }
}

/// Converts a dotted netmask to a prefix length, if it is a valid contiguous mask.
#[must_use]
pub fn netmask_to_prefix(mask: &str) -> Option<u32> {
    let addr: std::net::Ipv4Addr = mask.trim().parse().ok()?;
    let bits = u32::from(addr);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones)
}

fn with_prefix(addr: &str, prefix: Option<u32>) -> String {
    match prefix {
        Some(p) if !addr.contains('/') => format!("{addr}/{p}"),
        _ => addr.to_owned(),
    }
}

/// `70-persistent-net.rules`: (MAC, interface name) pins written by old udev versions.
#[must_use]
pub fn parse_udev_net_rules(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines().take(MAX_LINES) {
        let line = line.trim();
        if line.starts_with('#') || !line.contains("SUBSYSTEM==\"net\"") {
            continue;
        }
        let field = |key: &str| {
            let at = line.find(key)?;
            let rest = line.get(at + key.len()..)?;
            let rest = rest.strip_prefix("==").or_else(|| rest.strip_prefix('='))?;
            let rest = rest.strip_prefix('"')?;
            rest.split('"').next().map(str::to_owned)
        };
        if let (Some(mac), Some(name)) = (field("ATTR{address}"), field("NAME")) {
            out.push((mac.to_ascii_lowercase(), name));
        }
    }
    out
}

/// `/etc/network/interfaces` (and files under `interfaces.d`).
#[must_use]
pub fn parse_ifupdown(file: &str, text: &str) -> Vec<NetIface> {
    let mut out: Vec<NetIface> = Vec::new();
    let mut netmask: Option<u32> = None;
    for line in text.lines().take(MAX_LINES) {
        let line = line.trim();
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["iface", name, _family, method, ..] => {
                if let Some(last) = out.last_mut() {
                    fix_mask(last, netmask.take());
                }
                let mut i = iface(NetStyle::Ifupdown, file, name);
                i.method = match *method {
                    "static" => Method::Static,
                    "dhcp" => Method::Dhcp,
                    _ => Method::Other,
                };
                out.push(i);
            }
            ["address", a, ..] => {
                if let Some(i) = out.last_mut() {
                    i.addresses.push((*a).to_owned());
                }
            }
            ["netmask", m, ..] => netmask = netmask_to_prefix(m).or(m.parse().ok()),
            ["gateway", g, ..] => {
                if let Some(i) = out.last_mut() {
                    i.gateway = Some((*g).to_owned());
                }
            }
            ["hwaddress", rest @ ..] => {
                if let (Some(i), Some(mac)) = (out.last_mut(), rest.last()) {
                    i.mac = Some(mac.to_ascii_lowercase());
                }
            }
            _ => {}
        }
    }
    if let Some(last) = out.last_mut() {
        fix_mask(last, netmask);
    }
    out.retain(|i| i.name != "lo");
    out
}

fn fix_mask(i: &mut NetIface, prefix: Option<u32>) {
    for a in &mut i.addresses {
        *a = with_prefix(a, prefix);
    }
}

/// An ifcfg file (RHEL network-scripts or SUSE wicked): shell-style `KEY=value`.
#[must_use]
pub fn parse_ifcfg(style: NetStyle, file: &str, text: &str) -> Option<NetIface> {
    let kv = crate::linux::osrelease::parse_key_values(text);
    let fallback = file.rsplit('/').next()?.strip_prefix("ifcfg-")?.to_owned();
    let name = kv.get("DEVICE").cloned().unwrap_or(fallback);
    if name == "lo" {
        return None;
    }
    let mut i = iface(style, file, &name);
    let proto = kv
        .get("BOOTPROTO")
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    i.method = match proto.as_str() {
        "static" | "none" | "" if kv.contains_key("IPADDR") || kv.contains_key("IPADDR0") => {
            Method::Static
        }
        "dhcp" | "dhcp4" | "dhcp6" | "dhcp+autoip" => Method::Dhcp,
        "static" | "none" => Method::Static,
        _ => Method::Other,
    };
    for n in ["", "0", "1", "2", "3"] {
        if let Some(a) = kv.get(&format!("IPADDR{n}")) {
            let prefix = kv
                .get(&format!("PREFIX{n}"))
                .and_then(|p| p.parse().ok())
                .or_else(|| {
                    kv.get(&format!("NETMASK{n}"))
                        .and_then(|m| netmask_to_prefix(m))
                });
            i.addresses.push(with_prefix(a, prefix));
        }
    }
    i.gateway = kv.get("GATEWAY").cloned();
    i.mac = kv
        .get("HWADDR")
        .or_else(|| kv.get("MACADDR"))
        .or_else(|| kv.get("LLADDR"))
        .map(|m| m.to_ascii_lowercase());
    Some(i)
}

/// Sections of an INI-style file (NetworkManager keyfiles, systemd units): (section, key, value).
fn ini_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().take(MAX_LINES) {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            s.clone_into(&mut section);
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

/// A NetworkManager keyfile.
#[must_use]
pub fn parse_nm_keyfile(file: &str, text: &str) -> Option<NetIface> {
    let e = ini_entries(text);
    let get = |s: &str, k: &str| {
        e.iter()
            .find(|(sec, key, _)| sec == s && key == k)
            .map(|(_, _, v)| v.clone())
    };
    let kind = get("connection", "type").unwrap_or_default();
    if !(kind == "ethernet" || kind == "802-3-ethernet") {
        return None;
    }
    let name = get("connection", "interface-name").unwrap_or_default();
    let mut i = iface(NetStyle::NetworkManager, file, &name);
    i.mac = get("ethernet", "mac-address")
        .or_else(|| get("802-3-ethernet", "mac-address"))
        .map(|m| m.to_ascii_lowercase());
    i.method = match get("ipv4", "method").as_deref() {
        Some("manual") => Method::Static,
        Some("auto") | None => Method::Dhcp,
        Some(_) => Method::Other,
    };
    for (sec, k, v) in &e {
        if sec == "ipv4" && (k.starts_with("address") && k[7..].chars().all(|c| c.is_ascii_digit()))
        {
            // "192.0.2.10/24,192.0.2.1" — the optional part after ',' is the gateway.
            let mut parts = v.split(',');
            if let Some(a) = parts.next() {
                i.addresses.push(a.trim().to_owned());
            }
            if let Some(g) = parts.next() {
                i.gateway = Some(g.trim().to_owned());
            }
        }
    }
    if let Some(g) = get("ipv4", "gateway") {
        i.gateway = Some(g);
    }
    Some(i)
}

/// A systemd-networkd `.network` file.
#[must_use]
pub fn parse_networkd(file: &str, text: &str) -> Option<NetIface> {
    let e = ini_entries(text);
    let get = |s: &str, k: &str| {
        e.iter()
            .find(|(sec, key, _)| sec == s && key == k)
            .map(|(_, _, v)| v.clone())
    };
    let name = get("Match", "Name").unwrap_or_default();
    if name == "lo" {
        return None;
    }
    let mut i = iface(NetStyle::SystemdNetworkd, file, &name);
    i.mac = get("Match", "MACAddress").map(|m| m.to_ascii_lowercase());
    i.addresses = e
        .iter()
        .filter(|(s, k, _)| (s == "Network" || s == "Address") && k == "Address")
        .map(|(_, _, v)| v.clone())
        .collect();
    i.gateway = get("Network", "Gateway").or_else(|| get("Route", "Gateway"));
    let dhcp = get("Network", "DHCP").unwrap_or_default();
    i.method = if matches!(dhcp.as_str(), "yes" | "ipv4" | "ipv6" | "true") {
        Method::Dhcp
    } else if !i.addresses.is_empty() {
        Method::Static
    } else {
        Method::Other
    };
    Some(i)
}

/// A netplan YAML file.
#[must_use]
pub fn parse_netplan(file: &str, text: &str) -> Vec<NetIface> {
    use yaml_rust2::{Yaml, YamlLoader};
    // Netplan files are small; refuse absurd ones before the YAML parser sees them.
    if text.len() > 1 << 20 {
        return Vec::new();
    }
    let Ok(docs) = YamlLoader::load_from_str(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for doc in docs.iter().take(16) {
        let Some(eths) = doc["network"]["ethernets"].as_hash() else {
            continue;
        };
        for (k, v) in eths.iter().take(1024) {
            let Some(id) = k.as_str() else { continue };
            let set_name = v["set-name"].as_str();
            let mut i = iface(NetStyle::Netplan, file, set_name.unwrap_or(id));
            i.mac = v["match"]["macaddress"]
                .as_str()
                .map(str::to_ascii_lowercase);
            if i.mac.is_none()
                && let Some(n) = v["match"]["name"].as_str()
            {
                n.clone_into(&mut i.name);
            }
            if let Some(addrs) = v["addresses"].as_vec() {
                i.addresses = addrs
                    .iter()
                    .filter_map(Yaml::as_str)
                    .map(str::to_owned)
                    .collect();
            }
            i.gateway = v["gateway4"].as_str().map(str::to_owned).or_else(|| {
                v["routes"].as_vec().and_then(|rs| {
                    rs.iter()
                        .find(|r| matches!(r["to"].as_str(), Some("default" | "0.0.0.0/0")))
                        .and_then(|r| r["via"].as_str().map(str::to_owned))
                })
            });
            let dhcp = matches!(v["dhcp4"], Yaml::Boolean(true))
                || matches!(v["dhcp4"].as_str(), Some("yes" | "true"));
            i.method = if dhcp {
                Method::Dhcp
            } else if i.addresses.is_empty() {
                Method::Other
            } else {
                Method::Static
            };
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifupdown_static_with_netmask() {
        let t = "auto lo\niface lo inet loopback\n\nauto ens192\niface ens192 inet static\n  address 192.168.10.20\n  netmask 255.255.255.0\n  gateway 192.168.10.1\n";
        let v = parse_ifupdown("/etc/network/interfaces", t);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "ens192");
        assert_eq!(v[0].method, Method::Static);
        assert_eq!(v[0].addresses, vec!["192.168.10.20/24"]);
        assert_eq!(v[0].gateway.as_deref(), Some("192.168.10.1"));
    }

    #[test]
    fn rhel_ifcfg() {
        let t = "TYPE=Ethernet\nBOOTPROTO=none\nDEVICE=ens192\nONBOOT=yes\nHWADDR=00:50:56:AB:CD:EF\nIPADDR=10.0.0.5\nPREFIX=16\nGATEWAY=10.0.0.1\n";
        let i = parse_ifcfg(
            NetStyle::RhelIfcfg,
            "/etc/sysconfig/network-scripts/ifcfg-ens192",
            t,
        )
        .unwrap();
        assert_eq!(i.name, "ens192");
        assert_eq!(i.method, Method::Static);
        assert_eq!(i.addresses, vec!["10.0.0.5/16"]);
        assert_eq!(i.mac.as_deref(), Some("00:50:56:ab:cd:ef"));
        let d = parse_ifcfg(NetStyle::SuseWicked, "/x/ifcfg-eth0", "BOOTPROTO='dhcp'\n").unwrap();
        assert_eq!((d.name.as_str(), d.method), ("eth0", Method::Dhcp));
    }

    #[test]
    fn nm_keyfile() {
        let t = "[connection]\nid=ens192\ntype=ethernet\ninterface-name=ens192\n\n[ethernet]\nmac-address=00:50:56:01:02:03\n\n[ipv4]\naddress1=172.16.5.9/24,172.16.5.1\nmethod=manual\n";
        let i = parse_nm_keyfile(
            "/etc/NetworkManager/system-connections/ens192.nmconnection",
            t,
        )
        .unwrap();
        assert_eq!(i.method, Method::Static);
        assert_eq!(i.addresses, vec!["172.16.5.9/24"]);
        assert_eq!(i.gateway.as_deref(), Some("172.16.5.1"));
        assert_eq!(i.mac.as_deref(), Some("00:50:56:01:02:03"));
    }

    #[test]
    fn netplan_static_with_mac_match() {
        let t = "network:\n  version: 2\n  ethernets:\n    ens192:\n      match:\n        macaddress: 00:50:56:AA:BB:CC\n      set-name: ens192\n      addresses: [10.1.2.3/24]\n      routes:\n        - to: default\n          via: 10.1.2.1\n";
        let v = parse_netplan("/etc/netplan/50-cloud-init.yaml", t);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "ens192");
        assert_eq!(v[0].mac.as_deref(), Some("00:50:56:aa:bb:cc"));
        assert_eq!(v[0].addresses, vec!["10.1.2.3/24"]);
        assert_eq!(v[0].gateway.as_deref(), Some("10.1.2.1"));
        assert_eq!(v[0].method, Method::Static);
        assert!(parse_netplan("x", ":\n- [").is_empty());
    }

    #[test]
    fn udev_pins() {
        let t = "# generated\nSUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:50:56:AB:00:01\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"ens192\"\n";
        assert_eq!(
            parse_udev_net_rules(t),
            vec![("00:50:56:ab:00:01".to_owned(), "ens192".to_owned())]
        );
        assert!(parse_udev_net_rules("SUBSYSTEM==\"block\", NAME=\"x\"").is_empty());
    }

    #[test]
    fn networkd() {
        let t = "[Match]\nName=eth0\n\n[Network]\nAddress=192.0.2.7/24\nGateway=192.0.2.1\n";
        let i = parse_networkd("/etc/systemd/network/10-eth0.network", t).unwrap();
        assert_eq!(i.method, Method::Static);
        assert_eq!(i.addresses, vec!["192.0.2.7/24"]);
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask_to_prefix("255.255.255.0"), Some(24));
        assert_eq!(netmask_to_prefix("255.255.0.255"), None);
        assert_eq!(netmask_to_prefix("0.0.0.0"), Some(0));
        assert_eq!(netmask_to_prefix("255.255.255.255"), Some(32));
    }
}
