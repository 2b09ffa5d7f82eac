using System.Runtime.InteropServices;
using System.Text;

namespace DeepSeekSharp.IO;

/// <summary>
/// The one rule for the files dss reads (configs, tokenizers, weights, indexes, datasets): a path must lead, through any
/// symbolic links, to a regular file. Links are followed (a Hugging Face hub cache holds
/// <c>snapshots/&lt;rev&gt;/model.safetensors -&gt; ../../blobs/&lt;sha&gt;</c>), and sizes are the target's, never the link's. A FIFO, a
/// device or a socket is refused before it is opened: opening a FIFO for reading blocks until a writer appears, and a
/// device never ends.
/// </summary>
public static partial class InputFile
{
    /// <summary>
    /// Checks that <paramref name="path"/> is (or links to) a regular file and returns its length in bytes; otherwise
    /// throws a <see cref="DeepSeekSharpException"/> naming the path.
    /// </summary>
    /// <param name="what">what the file is, for the not-found message (e.g. "config file")</param>
    public static long RequireRegular(string path, string what = "file")
    {
        if (Directory.Exists(path)) throw new DeepSeekSharpException($"{path}: is a folder, not a {what}");
        if (!File.Exists(path)) throw new DeepSeekSharpException($"{path}: {what} not found");
        if (OperatingSystem.IsLinux() && TryStatx(path, out ushort mode, out ulong size))
        {
            string? kind = (mode & FileTypeMask) switch
            {
                RegularFile => null,
                0x1000 => "a FIFO",
                0x2000 => "a character device",
                0x6000 => "a block device",
                0xC000 => "a socket",
                _ => "not a regular file",
            };
            if (kind is not null) throw new DeepSeekSharpException($"{path}: is {kind}, not a regular {what}; refusing to read it");
            return (long)size;
        }
        // Elsewhere (no FIFOs in the file system on Windows), the size of the link's final target.
        var info = new FileInfo(path);
        return info.LinkTarget is null ? info.Length : ((FileInfo?)info.ResolveLinkTarget(returnFinalTarget: true))?.Length ?? info.Length;
    }

    /// <summary>Reads a whole text file after <see cref="RequireRegular"/>; a read failure names the file.</summary>
    public static string ReadAllText(string path, string what = "file")
    {
        RequireRegular(path, what);
        try { return File.ReadAllText(path, Encoding.UTF8); }
        catch (IOException e) { throw new DeepSeekSharpException($"{path}: cannot read ({e.Message})"); }
        catch (UnauthorizedAccessException e) { throw new DeepSeekSharpException($"{path}: cannot read ({e.Message})"); }
    }

    private const ushort FileTypeMask = 0xF000, RegularFile = 0x8000;

    // statx(2) has one layout on every Linux architecture (unlike struct stat), so the file type and size can be read
    // without a native helper: stx_mode (u16) at byte 28, stx_size (u64) at byte 40 of a 256-byte buffer.
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private struct StatxBuffer
    {
        [FieldOffset(28)] public ushort Mode;
        [FieldOffset(40)] public ulong Size;
    }

    private const int AtCurrentDirectory = -100;
    private const uint StatxType = 0x1, StatxSize = 0x200;

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Statx(int directoryFd, string path, int flags, uint mask, out StatxBuffer buffer);

    private static bool TryStatx(string path, out ushort mode, out ulong size)
    {
        (mode, size) = (0, 0);
        try
        {
            // flags 0: follow symbolic links, so the type and size are the final target's.
            if (Statx(AtCurrentDirectory, path, 0, StatxType | StatxSize, out var buffer) != 0) return false;
            (mode, size) = (buffer.Mode, buffer.Size);
            return true;
        }
        catch (EntryPointNotFoundException) { return false; } // a libc older than glibc 2.28
        catch (DllNotFoundException) { return false; }
    }
}
