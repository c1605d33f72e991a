// Copyright 2018 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

mod messages;
mod wire_format;

pub use self::messages::*;
pub use self::wire_format::Data;
pub use self::wire_format::P9String;
pub use self::wire_format::WireFormat;
