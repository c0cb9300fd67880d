//! Real-mode KVM micro-VMs (see issue 9).
