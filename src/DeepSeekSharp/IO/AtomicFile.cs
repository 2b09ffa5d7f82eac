namespace DeepSeekSharp.IO;

/// <summary>
/// Writes a file so that a reader (or a restarted run) sees either the old content or the complete new one:
/// the data goes to a temporary file in the same folder, is flushed, and is renamed over the target. A crash
/// leaves at worst a stray <c>.NAME.tmp-PID-ID</c> file, never a truncated target; the next write of the same target
/// removes strays whose process is gone (<see cref="AtomicFolder.RemoveLeftovers"/>).
/// </summary>
public static class AtomicFile
{
    public static void Write(string path, Action<FileStream> write)
    {
        string full = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(full)!;
        AtomicFolder.RemoveLeftovers(folder, Path.GetFileName(full));
        string tmp = Path.Combine(folder, AtomicFolder.TempName(Path.GetFileName(full), "tmp"));
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, fs =>
        {
            using var w = new StreamWriter(fs, new System.Text.UTF8Encoding(false), 1 << 16, leaveOpen: true);
            w.Write(text);
        });
}
