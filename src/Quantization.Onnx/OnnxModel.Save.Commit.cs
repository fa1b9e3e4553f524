namespace Quantization.Onnx;

public sealed partial class OnnxModel
{
    /// <summary>Puts the data file and then the model in place; if the model cannot be, takes the data file back out and restores any file it replaced.</summary>
    private static void Commit(string modelTemporary, string model, string? dataTemporary, string data)
    {
        string? backup = null;
        bool placed = false;
        try
        {
            if (dataTemporary is not null)
            {
                if (File.Exists(data))
                {
                    backup = TemporaryPath(data);
                    File.Move(data, backup);
                }

                File.Move(dataTemporary, data);
                placed = true;
            }

            File.Move(modelTemporary, model, overwrite: true);
        }
        catch
        {
            if (placed)
            {
                File.Delete(data);
            }

            if (backup is not null)
            {
                File.Move(backup, data);
            }

            throw;
        }

        if (backup is not null)
        {
            File.Delete(backup);
        }
    }

    private static string TemporaryPath(string target) =>
        Path.Combine(Path.GetDirectoryName(target) ?? ".", $".{Path.GetFileName(target)}.{Guid.NewGuid():N}.tmp");

    private static bool SamePath(string a, string b) =>
        string.Equals(a, b, OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal);
}
