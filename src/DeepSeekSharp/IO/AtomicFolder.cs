using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace DeepSeekSharp.IO;

/// <summary>
/// Writes a whole folder so that readers (or a restarted run) see either the previous folder or the complete new
/// one, never a mix: the content is written into a temporary sibling <c>.NAME.tmp-PID-ID</c>, then renamed into
/// place. Replacing an existing folder swaps the two in one step (Linux <c>renameat2(RENAME_EXCHANGE)</c>), so no
/// moment exists without a folder under the name. A writer killed half-way leaves only its temporary sibling,
/// which the next write next to it removes once its process is gone (<see cref="RemoveLeftovers"/>).
/// </summary>
public static partial class AtomicFolder
{
    /// <summary>
    /// Creates <paramref name="path"/> with what <paramref name="fill"/> writes into the folder it is given. A missing
    /// or empty <paramref name="path"/> is simply taken; an existing non-empty one only when <paramref name="replace"/>
    /// (the caller decides what it may replace).
    /// </summary>
    public static void Write(string path, Action<string> fill, bool replace)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        string parent = Path.GetDirectoryName(full) ?? throw new DeepSeekSharpException($"{path}: cannot write a folder at the file system root");
        string name = Path.GetFileName(full);
        if (File.Exists(full)) throw new DeepSeekSharpException($"{path}: is a file, not a folder");
        Directory.CreateDirectory(parent);
        RemoveLeftovers(parent, name);
        bool occupied = Directory.Exists(full) && Directory.EnumerateFileSystemEntries(full).Any();
        if (occupied && !replace) throw new DeepSeekSharpException($"{path}: folder exists and is not empty");
        string tmp = Path.Combine(parent, TempName(name, "tmp"));
        try
        {
            Directory.CreateDirectory(tmp);
            fill(tmp);
            if (!Directory.Exists(full)) Directory.Move(tmp, full);
            else if (!occupied)
            {
                Directory.Delete(full);
                Directory.Move(tmp, full);
            }
            else Swap(tmp, full, parent, name);
        }
        finally
        {
            // After a swap the temporary name holds the previous folder.
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        }
    }

    /// <summary>
    /// Deletes a folder so that it is either there whole or gone: it is renamed to a temporary sibling first, so a
    /// process killed half-way through the deletion leaves a leftover for <see cref="RemoveLeftovers"/>, not a folder
    /// with some of its files under the old name.
    /// </summary>
    public static void Delete(string path)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        string doomed = Path.Combine(Path.GetDirectoryName(full)!, TempName(Path.GetFileName(full), "tmp"));
        Directory.Move(full, doomed);
        Directory.Delete(doomed, true);
    }

    /// <summary>
    /// Removes what killed writers left next to <paramref name="name"/> in <paramref name="parent"/> (every name when
    /// null): temporary files and folders of <see cref="AtomicFolder"/> and <see cref="AtomicFile"/> whose process no
    /// longer runs. A previous folder set aside by a replacement that never finished (the fallback without an atomic
    /// swap) is put back when nothing took its place, else deleted.
    /// </summary>
    public static int RemoveLeftovers(string parent, string? name = null)
    {
        if (!Directory.Exists(parent)) return 0;
        int removed = 0;
        foreach (var entry in Directory.EnumerateFileSystemEntries(parent, name is null ? ".*" : $".{name}.*"))
        {
            if (!TryParseTemp(Path.GetFileName(entry), out string target, out string kind, out int pid) || IsRunning(pid)) continue;
            string targetPath = Path.Combine(parent, target);
            if (kind == "old" && Directory.Exists(entry) && !Directory.Exists(targetPath))
            {
                Directory.Move(entry, targetPath);
                continue;
            }
            if (Directory.Exists(entry)) Directory.Delete(entry, true);
            else File.Delete(entry);
            removed++;
        }
        return removed;
    }

    /// <summary>The full path with symbolic links resolved (as far as it exists), for comparing folders.</summary>
    public static string Canonical(string path)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return full;
        nint resolved = RealPath(full, 0);
        if (resolved == 0) return full;
        try { return Marshal.PtrToStringUTF8(resolved) ?? full; }
        finally { Free(resolved); }
    }

    /// <summary>Whether <paramref name="path"/> is <paramref name="folder"/> or lies inside it (links resolved).</summary>
    public static bool IsSameOrInside(string path, string folder)
    {
        string p = Canonical(path), f = Canonical(folder);
        return p == f || p.StartsWith(f + Path.DirectorySeparatorChar, StringComparison.Ordinal);
    }

    internal static string TempName(string name, string kind) =>
        string.Create(CultureInfo.InvariantCulture, $".{name}.{kind}-{Environment.ProcessId}-{Guid.NewGuid():N}");

    private static bool TryParseTemp(string entry, out string target, out string kind, out int pid)
    {
        // .NAME.tmp-PID-ID or .NAME.old-PID-ID (NAME may itself contain dots).
        target = kind = "";
        pid = 0;
        foreach (var k in new[] { "tmp", "old" })
        {
            int at = entry.LastIndexOf($".{k}-", StringComparison.Ordinal);
            if (at <= 1) continue;
            var rest = entry.AsSpan(at + k.Length + 2);
            int dash = rest.IndexOf('-');
            if (dash <= 0 || !int.TryParse(rest[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out pid)) continue;
            target = entry[1..at];
            kind = k;
            return true;
        }
        return false;
    }

    private static bool IsRunning(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    private static void Swap(string tmp, string full, string parent, string name)
    {
        const uint RenameExchange = 2;
        const int AtCurrentDirectory = -100;
        if (OperatingSystem.IsLinux() && RenameAt2(AtCurrentDirectory, tmp, AtCurrentDirectory, full, RenameExchange) == 0) return;
        // No atomic swap (another OS, or a file system without RENAME_EXCHANGE): set the previous folder aside first;
        // RemoveLeftovers puts it back if the process dies before the new one is in place.
        string old = Path.Combine(parent, TempName(name, "old"));
        Directory.Move(full, old);
        Directory.Move(tmp, full);
        Directory.Move(old, tmp);
    }

    [LibraryImport("libc", EntryPoint = "renameat2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int RenameAt2(int oldDirectory, string oldPath, int newDirectory, string newPath, uint flags);

    [LibraryImport("libc", EntryPoint = "realpath", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint RealPath(string path, nint resolved);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void Free(nint pointer);
}
