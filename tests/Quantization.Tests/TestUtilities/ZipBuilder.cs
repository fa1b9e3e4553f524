using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace Quantization.Tests.TestUtilities;

/// <summary>
/// Builds zip archives byte by byte the way Python's zipfile writes numpy's .npz files (numpy.savez opens each member
/// with force_zip64=True): a local header with version 20, no flags, the date 1980-01-01 00:00, the real sizes and a
/// zip64 extra field (tag 1, 16 bytes: uncompressed and compressed size), the data, then central directory records
/// (made by 3.20, Unix, external attributes 0o600 &lt;&lt; 16, no extra) and the end record. Every field can be made to lie.
/// </summary>
internal sealed class ZipBuilder
{
    private readonly List<Member> _members = [];
    private readonly List<(int Member, string Name)> _aliases = [];

    /// <summary>Adds a member. <paramref name="deflate"/> compresses it with .NET's DEFLATE; the overrides replace the sizes written in both headers.</summary>
    public ZipBuilder Add(string name, byte[] content, bool deflate = false, long? declaredSize = null, long? declaredCompressedSize = null, int cutCompressedTo = -1)
    {
        byte[] stored = content;
        if (deflate)
        {
            using MemoryStream compressed = new();
            using (DeflateStream stream = new(compressed, CompressionLevel.Optimal, leaveOpen: true))
            {
                stream.Write(content);
            }

            stored = compressed.ToArray();
        }

        if (cutCompressedTo >= 0)
        {
            stored = stored[..cutCompressedTo];
        }

        _members.Add(new Member(name, stored, deflate ? (ushort)8 : (ushort)0, Crc32(content), declaredSize ?? content.Length, declaredCompressedSize ?? stored.Length));
        return this;
    }

    /// <summary>Adds a central directory record for an existing member's local header under another name (overlapping members).</summary>
    public ZipBuilder Alias(int member, string name)
    {
        _aliases.Add((member, name));
        return this;
    }

    public byte[] ToArray()
    {
        using MemoryStream zip = new();
        List<long> offsets = [];
        foreach (Member member in _members)
        {
            offsets.Add(zip.Position);
            byte[] name = Encoding.UTF8.GetBytes(member.Name);
            Span<byte> local = new byte[30];
            BinaryPrimitives.WriteUInt32LittleEndian(local, 0x04034b50);
            BinaryPrimitives.WriteUInt16LittleEndian(local[4..], 20);
            BinaryPrimitives.WriteUInt16LittleEndian(local[8..], member.Method);
            BinaryPrimitives.WriteUInt16LittleEndian(local[12..], 0x21);
            BinaryPrimitives.WriteUInt32LittleEndian(local[14..], member.Crc);
            BinaryPrimitives.WriteUInt32LittleEndian(local[18..], Clamp(member.CompressedSize));
            BinaryPrimitives.WriteUInt32LittleEndian(local[22..], Clamp(member.Size));
            BinaryPrimitives.WriteUInt16LittleEndian(local[26..], (ushort)name.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(local[28..], 20);
            zip.Write(local);
            zip.Write(name);
            Span<byte> extra = new byte[20];
            BinaryPrimitives.WriteUInt16LittleEndian(extra, 1);
            BinaryPrimitives.WriteUInt16LittleEndian(extra[2..], 16);
            BinaryPrimitives.WriteInt64LittleEndian(extra[4..], member.Size);
            BinaryPrimitives.WriteInt64LittleEndian(extra[12..], member.CompressedSize);
            zip.Write(extra);
            zip.Write(member.Data);
        }

        long directory = zip.Position;
        (Member Member, string Name, long Offset)[] records = [.. _members.Select((m, i) => (m, m.Name, offsets[i])), .. _aliases.Select(a => (_members[a.Member], a.Name, offsets[a.Member]))];
        foreach ((Member member, string memberName, long offset) in records)
        {
            byte[] name = Encoding.UTF8.GetBytes(memberName);
            bool zip64 = member.Size >= uint.MaxValue || member.CompressedSize >= uint.MaxValue;
            Span<byte> central = new byte[46];
            BinaryPrimitives.WriteUInt32LittleEndian(central, 0x02014b50);
            BinaryPrimitives.WriteUInt16LittleEndian(central[4..], 0x0314);
            BinaryPrimitives.WriteUInt16LittleEndian(central[6..], zip64 ? (ushort)45 : (ushort)20);
            BinaryPrimitives.WriteUInt16LittleEndian(central[10..], member.Method);
            BinaryPrimitives.WriteUInt16LittleEndian(central[14..], 0x21);
            BinaryPrimitives.WriteUInt32LittleEndian(central[16..], member.Crc);
            BinaryPrimitives.WriteUInt32LittleEndian(central[20..], Clamp(member.CompressedSize));
            BinaryPrimitives.WriteUInt32LittleEndian(central[24..], Clamp(member.Size));
            BinaryPrimitives.WriteUInt16LittleEndian(central[28..], (ushort)name.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(central[30..], zip64 ? (ushort)20 : (ushort)0);
            BinaryPrimitives.WriteUInt32LittleEndian(central[38..], 0x01800000);
            BinaryPrimitives.WriteUInt32LittleEndian(central[42..], (uint)offset);
            zip.Write(central);
            zip.Write(name);
            if (zip64)
            {
                Span<byte> extra = new byte[20];
                BinaryPrimitives.WriteUInt16LittleEndian(extra, 1);
                BinaryPrimitives.WriteUInt16LittleEndian(extra[2..], 16);
                BinaryPrimitives.WriteInt64LittleEndian(extra[4..], member.Size);
                BinaryPrimitives.WriteInt64LittleEndian(extra[12..], member.CompressedSize);
                zip.Write(extra);
            }
        }

        long size = zip.Position - directory;
        Span<byte> end = new byte[22];
        BinaryPrimitives.WriteUInt32LittleEndian(end, 0x06054b50);
        BinaryPrimitives.WriteUInt16LittleEndian(end[8..], (ushort)records.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(end[10..], (ushort)records.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(end[12..], (uint)size);
        BinaryPrimitives.WriteUInt32LittleEndian(end[16..], (uint)directory);
        zip.Write(end);
        return zip.ToArray();
    }

    /// <summary>CRC-32 (ISO-HDLC, reflected polynomial 0xEDB88320), as zip uses.</summary>
    public static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++)
            {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
            }
        }

        return ~crc;
    }

    private static uint Clamp(long size) => size >= uint.MaxValue ? uint.MaxValue : (uint)size;

    private sealed record Member(string Name, byte[] Data, ushort Method, uint Crc, long Size, long CompressedSize);
}
